"""Developer-only support code shared by tests/ and bench/: the Cortex-M0+ emulator
(``m0sim``) and its builds (``m0build``), and random models (``randmodel``). Not part
of the installed package."""
