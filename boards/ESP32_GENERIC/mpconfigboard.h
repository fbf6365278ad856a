// rbnn on a generic ESP32 module: the in-tree ESP32_GENERIC settings under its own name.
#define MICROPY_HW_BOARD_NAME "Generic ESP32 module with rbnn"
#define MICROPY_HW_MCU_NAME "ESP32"
