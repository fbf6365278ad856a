"""rbnn: recursive binarized neural networks for microcontrollers.

Data flows one way: ``data`` -> ``train`` -> ``fold`` -> ``pack`` -> (file | serial) -> device.
``twin`` is the bit-exact numpy reference of what the device computes.
"""

__version__ = "0.1.0"
