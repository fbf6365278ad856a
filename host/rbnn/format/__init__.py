"""The .rbnn format (docs/FORMAT.md): bit vectors (``bits``), the integer model as
numpy arrays (``model``), reading and writing files (``pack``), the layer table
(``summary``) and the constants every engine shares (``constants``)."""
