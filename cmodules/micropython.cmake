# User C modules of rbnn for MicroPython's CMake-based ports (rp2, esp32):
#   make -C <MICROPY_DIR>/ports/rp2 USER_C_MODULES=<this repo>/cmodules/micropython.cmake
# Make-based ports (unix, qemu) take the folder instead: USER_C_MODULES=<this repo>/cmodules
include(${CMAKE_CURRENT_LIST_DIR}/rbnn/micropython.cmake)
