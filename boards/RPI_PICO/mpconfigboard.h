// rbnn on a Raspberry Pi Pico: the in-tree RPI_PICO settings under its own name.
#define MICROPY_HW_BOARD_NAME                   "Raspberry Pi Pico with rbnn"
// 2 MB flash: 1408 kB file system (models, the firmware's data), the rest the image.
#define MICROPY_HW_FLASH_STORAGE_BYTES          (1408 * 1024)
