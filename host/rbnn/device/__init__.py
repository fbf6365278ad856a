"""The device side of the host: serial frames (``frames``), the protocol client
(``link``), the raw REPL (``rawrepl``), firmware and model deployment (``deploy``),
flashing images (``flash``) and the virtual device (``virtual``, running the MicroPython
script ``board/vboard.py``, package data)."""
