"""Learning inside the arena: the integer training step of docs/TRAINING.md (its numpy
twin in ``step``, its random numbers in ``prng``), the hyper-parameters a run starts
from (``defaults``), and the growth runs of ``rbnn grow`` and its float reference."""
