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

# x86-64 (the unix port on a PC): POPCNT is in every x86-64 CPU since 2008 (the x86-64-v2
# baseline), so the kernel's scalar version is the hardware-popcount one ("popcnt64")
# there instead of SWAR; the AVX2 and AVX-512 VPOPCNTDQ kernels (and the training step's
# vector counter moves) need no flag: they are compiled by target attribute and chosen at
# run time by cpuid (rbnn_kernel.h). Other targets (qemu's rv32, arm) are unchanged.
# Recursive, so that the test runs when the object builds, with the port's final $(CC)
# (ports set it after including this file).
RBNN_POPCNT = $(if $(filter x86_64-%,$(shell $(CC) -dumpmachine 2>/dev/null)),-mpopcnt)
$(BUILD)/rbnn/rbnn_kernel.o: CFLAGS += $(RBNN_POPCNT)
