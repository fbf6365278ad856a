# rbnn on a Raspberry Pi Pico (RP2040): MicroPython's own RPI_PICO board, plus the rbnn
# C module (_rbnn) and the firmware/ Python files frozen into the image.
#   make firmware PORT=rp2 MICROPY_DIR=<MicroPython checkout>      (docs/FIRMWARE.md)
# or straight from the port:
#   make -C <MICROPY_DIR>/ports/rp2 BOARD_DIR=<this folder>

# 2 MB flash: 1408 kB file system (models, the firmware's data), the rest the image.
# Set here, before the in-tree board, which keeps a value set before it (MicroPython
# after v1.28.0 turns it into a compile definition and a linker check of its own).
set(MICROPY_HW_FLASH_STORAGE_BYTES 1441792)  # 1408 * 1024

# Everything the in-tree board sets (PICO_BOARD, PICO_PLATFORM, ...).
include(${MICROPY_PORT_DIR}/boards/RPI_PICO/mpconfigboard.cmake)

# The same value for MicroPython up to v1.28.0, whose mpconfigport.h reads it from the
# board (later ones define it identically from the variable above: no redefinition).
list(APPEND MICROPY_DEF_BOARD MICROPY_HW_FLASH_STORAGE_BYTES=${MICROPY_HW_FLASH_STORAGE_BYTES})

# Its pin names too (Pin("LED")).
set(MICROPY_BOARD_PINS ${MICROPY_PORT_DIR}/boards/RPI_PICO/pins.csv)

# The port's default modules and firmware/ (firmware/manifest.py includes the former).
set(MICROPY_FROZEN_MANIFEST ${CMAKE_CURRENT_LIST_DIR}/../../firmware/manifest.py)

# The C module, unless the command line names user C modules itself.
if(NOT USER_C_MODULES)
    set(USER_C_MODULES ${CMAKE_CURRENT_LIST_DIR}/../../cmodules/micropython.cmake)
endif()
