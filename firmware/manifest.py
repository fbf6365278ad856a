# Frozen-module manifest of an rbnn firmware image (docs/FIRMWARE.md).
#
# MicroPython's build runs this file with tools/manifestfile.py, with this folder as
# the working directory. It freezes every module of firmware/ (its .py files and
# packages) into the image, after the port's own default manifest (asyncio and the
# drivers the port ships), so `import rbnn` works on a freshly flashed board.
#
# boards/RPI_PICO and boards/ESP32_GENERIC name this file; for another board of those
# ports use `make firmware PORT=rp2 BOARD=<in-tree board>` (FROZEN_MANIFEST=this file).
# Ports without a boards/manifest.py (qemu, unix) include it with port_manifest=False:
#     include("<repo>/firmware/manifest.py", port_manifest=False)
import os

options.defaults(port_manifest=True)

if options.port_manifest:
    include("$(PORT_DIR)/boards/manifest.py")

# boot.py and main.py would run at every reset once frozen; they stay on the board's
# file system, where the user can change them.
_SKIP = {"manifest.py", "boot.py", "main.py"}

for _name in sorted(os.listdir(".")):
    if _name.endswith(".py") and _name not in _SKIP:
        module(_name)
    elif os.path.isfile(os.path.join(_name, "__init__.py")):
        package(_name)
