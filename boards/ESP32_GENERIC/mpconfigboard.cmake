# rbnn on a generic ESP32 module (ESP32-WROOM and the like): MicroPython's own
# ESP32_GENERIC board, plus the rbnn C module (_rbnn) and the firmware/ Python files
# frozen into the image. Needs ESP-IDF (docs/FIRMWARE.md).
#   make firmware PORT=esp32 MICROPY_DIR=<MicroPython checkout>
# or straight from the port:
#   make -C <MICROPY_DIR>/ports/esp32 BOARD_DIR=<this folder>

# Everything the in-tree board sets (SDKCONFIG_DEFAULTS, relative to the port folder).
include(${CMAKE_SOURCE_DIR}/boards/ESP32_GENERIC/mpconfigboard.cmake)

# The port's default modules and firmware/ (firmware/manifest.py includes the former).
set(MICROPY_FROZEN_MANIFEST ${CMAKE_CURRENT_LIST_DIR}/../../firmware/manifest.py)

# The C module, unless the command line names user C modules itself.
if(NOT USER_C_MODULES)
    set(USER_C_MODULES ${CMAKE_CURRENT_LIST_DIR}/../../cmodules/micropython.cmake)
endif()
