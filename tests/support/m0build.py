"""Cross-build C and assembly for the Cortex-M0+ emulator (:mod:`support.m0sim`).

Debian's ``gcc-arm-none-eabi`` compiles with ``-mcpu=cortex-m0plus -mthumb`` and links
against a linker script generated from the emulator's memory map, so the two cannot
disagree: code, constants, data and bss in SRAM (the RP2040 runs hot code from SRAM with
zero wait states), and a ``.flash`` section for read-only data placed in flash.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .m0sim import FLASH_BASE, FLASH_SIZE, SRAM_BASE, SRAM_SIZE, STACK_BYTES

CC = os.environ.get("ARM_CC", "arm-none-eabi-gcc")
CPU_FLAGS = ("-mcpu=cortex-m0plus", "-mthumb")
C_FLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-ffreestanding", "-fno-common")


class BuildError(RuntimeError):
    """The cross compiler is missing or failed."""


def linker_script() -> str:
    """GNU ld script for the emulator's memory map (stack reserved at the top of SRAM)."""
    return f"""\
MEMORY {{
  FLASH (rx)  : ORIGIN = {FLASH_BASE:#x}, LENGTH = {FLASH_SIZE:#x}
  SRAM  (rwx) : ORIGIN = {SRAM_BASE:#x}, LENGTH = {SRAM_SIZE - STACK_BYTES:#x}
}}
SECTIONS {{
  .text   : {{ *(.text*) *(.rodata*) . = ALIGN(4); }} > SRAM
  .data   : {{ *(.data*) . = ALIGN(4); }} > SRAM
  .bss    : {{ *(.bss*) *(COMMON) . = ALIGN(8); _end = .; }} > SRAM
  .flash  : {{ *(.flash*) }} > FLASH
  /DISCARD/ : {{ *(.ARM.exidx*) *(.ARM.extab*) *(.comment) }}
}}
"""


def compiler() -> str:
    """Path of arm-none-eabi-gcc ($ARM_CC overrides); BuildError if absent."""
    path = shutil.which(CC)
    if not path:
        raise BuildError(
            f"{CC} not found: install Debian's gcc-arm-none-eabi (`make deps-arm`)"
        )
    return path


def build(
    sources: Sequence[str | Path],
    out: str | Path,
    opt: str = "-O2",
    defines: Sequence[str] = (),
    include_dirs: Sequence[str | Path] = (),
    extra_flags: Sequence[str] = (),
) -> Path:
    """Compile and link ``sources`` (.c or .S) into an ELF file for :class:`support.m0sim.M0Plus`.

    Parameters
    ----------
    sources : paths of C or assembly files
    out : path of the ELF file to write (its folder is created; the linker script is
        written beside it)
    opt : optimisation flag, e.g. ``-O2`` or ``-Os``
    defines : ``NAME`` or ``NAME=VALUE`` for ``-D``
    include_dirs : folders for ``-I``

    Returns
    -------
    Path of the ELF file.
    """
    cc = compiler()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ld = out.with_suffix(".ld")
    ld.write_text(linker_script())
    cmd = [cc, *CPU_FLAGS, *C_FLAGS, opt, *extra_flags]
    cmd += [f"-D{d}" for d in defines]
    cmd += [f"-I{d}" for d in include_dirs]
    cmd += [str(s) for s in sources]
    # newlib-nano for memcpy/memset, libgcc for helpers such as __aeabi_uidiv.
    cmd += ["-nostartfiles", "--specs=nano.specs", f"-T{ld}",
            "-o", str(out), "-lc", "-lgcc"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError(f"cross build failed: {' '.join(cmd)}\n{r.stderr.strip()}")
    return out
