# rbnn C module for MicroPython's make-based ports (unix, qemu, stm32, ...).
# Build with: make -C <MICROPY_DIR>/ports/<port> USER_C_MODULES=<this repo>/cmodules
RBNN_MOD_DIR := $(USERMOD_DIR)

# The binding and the portable C core it wraps (inference, kernel, training step).
SRC_USERMOD_C += $(RBNN_MOD_DIR)/modrbnn.c
SRC_USERMOD_C += $(RBNN_MOD_DIR)/rbnn_core.c
SRC_USERMOD_C += $(RBNN_MOD_DIR)/rbnn_kernel.c
SRC_USERMOD_C += $(RBNN_MOD_DIR)/rbnn_train.c

CFLAGS_USERMOD += -I$(RBNN_MOD_DIR)

# Ports build for size (-Os); the inference and training loops are worth -O2. Objects
# of user C modules land in $(BUILD)/<path below USER_C_MODULES>.
$(BUILD)/rbnn/rbnn_core.o $(BUILD)/rbnn/rbnn_kernel.o $(BUILD)/rbnn/rbnn_train.o: CFLAGS += -O2
