// rbnn on a Raspberry Pi Pico: the in-tree RPI_PICO settings under its own name.
// MICROPY_HW_FLASH_STORAGE_BYTES comes from mpconfigboard.cmake (one value for every
// MicroPython version).
#define MICROPY_HW_BOARD_NAME                   "Raspberry Pi Pico with rbnn"
