"""A Cortex-M0+ cycle counter: ARMv6-M Thumb code run in unicorn, costed per instruction.

Unicorn executes the code; every translated block is decoded here once and each
instruction is charged its cycles from the Cortex-M0+ Technical Reference Manual
(ARM DDI 0484C, section 3.3 "Instruction set summary", Table 3-1), for a system with
zero wait states (code and data in SRAM):

=======================================================  =========================
instruction                                              cycles
=======================================================  =========================
data processing (MOVS, ADDS, ADCS, SUBS, SBCS, RSBS,     1
CMP, CMN, ANDS, EORS, ORRS, BICS, MVNS, TST, shifts,
RORS, ADD/SUB SP, ADR, SXT*, UXT*, REV*, CPS, NOP)
MULS                                                     1 (single-cycle multiplier,
                                                         as on the RP2040; 32 with the
                                                         small multiplier)
MOV PC, Rm / ADD PC, Rm                                  2
LDR*, STR* (any addressing mode, literal, SP-relative)   2 (1 only on the single-cycle
                                                         I/O port, not SRAM)
LDM, STM, PUSH                                           1 + N
POP                                                      1 + N; with PC: 3 + N
B<cond>                                                  1 not taken, 2 taken
B                                                        2
BL                                                       3
BX, BLX                                                  2
MRS, MSR, DMB, DSB, ISB                                  3
=======================================================  =========================

N counts every register in the list, LR and PC included (the table's N is "the number
of registers in the list"; other readings differ by one cycle per PUSH {..., LR} or
POP {..., PC}).

The decoder accepts only ARMv6-M encodings: any other 32-bit Thumb instruction (UDIV,
MUL.W, CBZ, IT, ...) raises :class:`M0Error`, so code built for a bigger core cannot
slip through. This matters because unicorn's M-profile CPU is a Cortex-M33 whatever
model is requested (it executes UDIV). Unaligned accesses, which fault on an M0+, raise
too, as do accesses outside the memory map and writes to flash.

Memory map (RP2040-like): ``ROM`` 0x00000000 (4 KiB, holds the return stub), ``FLASH``
0x10000000 (2 MiB, read-only to the code), ``SRAM`` 0x20000000 (264 KiB; the stack
grows down from its top).
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path

ROM_BASE, ROM_SIZE = 0x0000_0000, 0x1000
FLASH_BASE, FLASH_SIZE = 0x1000_0000, 0x20_0000
SRAM_BASE, SRAM_SIZE = 0x2000_0000, 0x4_2000
STACK_BYTES = 0x4000  # reserved below the top of SRAM; the heap stops there
RETURN_STUB = ROM_BASE + 0x100  # LR points here; reaching it ends a call

# Condition codes of B<cond>, evaluated on the APSR flags (N, Z, C, V).
_CONDS = {
    0: lambda n, z, c, v: z,
    1: lambda n, z, c, v: not z,
    2: lambda n, z, c, v: c,
    3: lambda n, z, c, v: not c,
    4: lambda n, z, c, v: n,
    5: lambda n, z, c, v: not n,
    6: lambda n, z, c, v: v,
    7: lambda n, z, c, v: not v,
    8: lambda n, z, c, v: c and not z,
    9: lambda n, z, c, v: (not c) or z,
    10: lambda n, z, c, v: n == v,
    11: lambda n, z, c, v: n != v,
    12: lambda n, z, c, v: (not z) and n == v,
    13: lambda n, z, c, v: z or n != v,
}


class M0Error(RuntimeError):
    """Code the Cortex-M0+ would not run (non-ARMv6-M instruction, unaligned or
    unmapped access, write to flash) or a call that did not return."""


@dataclass(frozen=True)
class CallResult:
    """What one function call returned and cost."""

    result: int  # r0 as an unsigned 32-bit value
    cycles: int
    instructions: int
    profile: dict[str, int] = field(default_factory=dict)  # cycles per function symbol

    @property
    def signed(self) -> int:
        """r0 as a signed 32-bit value (C ``int`` results, error codes)."""
        return self.result - (1 << 32) if self.result & 0x8000_0000 else self.result


# --- the cycle table ------------------------------------------------------------------
# Kinds of the last instruction of a block, which decide what the next block costs.
_PLAIN, _COND = 0, 1


def _sext(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) & 1 else value


def decode(hw: int, hw2: int | None, addr: int) -> tuple[int, int, int, int]:
    """Cost of one Thumb instruction.

    Parameters
    ----------
    hw : int
        First halfword.
    hw2 : int or None
        Second halfword (needed for 32-bit encodings; None if past the block end).
    addr : int
        Address of the instruction (for branch targets).

    Returns
    -------
    (size, cycles, kind, target)
        ``size`` in bytes; ``cycles`` from Table 3-1 (a conditional branch is charged 1
        here and 1 more when taken); ``kind`` _COND for B<cond> else _PLAIN; ``target``
        the branch target of B<cond> (else 0).

    Raises
    ------
    M0Error
        If the encoding is not an ARMv6-M instruction.
    """
    top5 = hw >> 11
    if top5 in (0b11101, 0b11110, 0b11111):
        if hw2 is None:
            raise M0Error(f"truncated 32-bit instruction at {addr:#010x}")
        return _decode32(hw, hw2, addr)
    if hw >> 14 == 0b00:  # shift (immediate), add, subtract, move, compare
        return 2, 1, _PLAIN, 0
    if hw >> 10 == 0b010000:  # data processing, MULS included
        return 2, 1, _PLAIN, 0
    if hw >> 10 == 0b010001:  # special data processing, branch and exchange
        op = hw >> 8 & 0b11
        rd = (hw >> 4 & 0b1000) | (hw & 0b111)
        if op == 0b11:  # BX / BLX
            if hw & 0b111:
                raise M0Error(f"unpredictable BX/BLX encoding {hw:#06x} at {addr:#010x}")
            return 2, 2, _PLAIN, 0
        if op in (0b00, 0b10) and rd == 15:  # ADD PC, Rm / MOV PC, Rm
            return 2, 2, _PLAIN, 0
        return 2, 1, _PLAIN, 0
    if hw >> 11 == 0b01001:  # LDR (literal)
        return 2, 2, _PLAIN, 0
    if hw >> 12 == 0b0101 or hw >> 13 == 0b011 or hw >> 13 == 0b100:  # load/store single
        return 2, 2, _PLAIN, 0
    if hw >> 12 == 0b1010:  # ADR, ADD Rd, SP, #imm
        return 2, 1, _PLAIN, 0
    if hw >> 12 == 0b1011:
        return _decode_misc(hw, addr)
    if hw >> 12 == 0b1100:  # STM / LDM
        n = bin(hw & 0xFF).count("1")
        if n == 0:
            raise M0Error(f"LDM/STM with an empty register list at {addr:#010x}")
        return 2, 1 + n, _PLAIN, 0
    if hw >> 12 == 0b1101:
        cond = hw >> 8 & 0xF
        if cond == 0b1111:  # SVC
            raise M0Error(f"SVC at {addr:#010x}: no exception model in this harness")
        if cond == 0b1110:
            raise M0Error(f"UDF (permanently undefined) at {addr:#010x}")
        return 2, 1, _COND, addr + 4 + _sext(hw & 0xFF, 8) * 2
    if top5 == 0b11100:  # B (unconditional)
        return 2, 2, _PLAIN, 0
    raise M0Error(f"not an ARMv6-M instruction: {hw:#06x} at {addr:#010x}")


def _decode_misc(hw: int, addr: int) -> tuple[int, int, int, int]:
    """Miscellaneous 16-bit instructions (1011 xxxx xxxx xxxx)."""
    op7 = hw >> 5 & 0x7F
    if op7 >> 2 == 0b00000 or op7 >> 2 == 0b00001:  # ADD/SUB SP, SP, #imm
        return 2, 1, _PLAIN, 0
    if op7 >> 3 == 0b0010:  # SXTH, SXTB, UXTH, UXTB
        return 2, 1, _PLAIN, 0
    if op7 >> 4 == 0b010:  # PUSH {reglist, LR?}
        n = bin(hw & 0x1FF).count("1")
        if n == 0:
            raise M0Error(f"PUSH with an empty register list at {addr:#010x}")
        return 2, 1 + n, _PLAIN, 0
    if hw & 0xFFEF == 0xB662:  # CPSIE i / CPSID i
        return 2, 1, _PLAIN, 0
    if op7 >> 3 == 0b1010 and (hw >> 6 & 0b11) != 0b10:  # REV, REV16, REVSH
        return 2, 1, _PLAIN, 0
    if op7 >> 4 == 0b110:  # POP {reglist, PC?}
        n = bin(hw & 0x1FF).count("1")
        if n == 0:
            raise M0Error(f"POP with an empty register list at {addr:#010x}")
        return 2, (3 + n) if hw & 0x100 else (1 + n), _PLAIN, 0
    if op7 >> 3 == 0b1110:  # BKPT
        raise M0Error(f"BKPT at {addr:#010x}")
    if hw & 0xFF0F == 0xBF00 and (hw >> 4 & 0xF) <= 4:  # NOP, YIELD, WFE, WFI, SEV
        return 2, 1, _PLAIN, 0
    raise M0Error(f"not an ARMv6-M instruction: {hw:#06x} at {addr:#010x} (CBZ/IT are v7-M)")


def _decode32(hw: int, hw2: int, addr: int) -> tuple[int, int, int, int]:
    """The six 32-bit ARMv6-M instructions: BL, MSR, MRS, DSB, DMB, ISB (and UDF.W)."""
    if hw >> 11 == 0b11110 and hw2 >> 14 == 0b11 and hw2 >> 12 & 1:  # BL
        return 4, 3, _PLAIN, 0
    if hw & 0xFFF0 == 0xF380 and hw2 & 0xFF00 == 0x8800:  # MSR
        return 4, 3, _PLAIN, 0
    if hw == 0xF3EF and hw2 & 0xF000 == 0x8000:  # MRS
        return 4, 3, _PLAIN, 0
    if hw == 0xF3BF and hw2 & 0xFFF0 in (0x8F40, 0x8F50, 0x8F60):  # DSB, DMB, ISB
        return 4, 3, _PLAIN, 0
    raise M0Error(f"not an ARMv6-M instruction: {hw:#06x} {hw2:#06x} at {addr:#010x}")


# --- ELF --------------------------------------------------------------------------------
@dataclass
class Elf:
    """The loadable segments and symbols of a 32-bit little-endian ARM ELF file."""

    segments: list[tuple[int, bytes, int]]  # (address, file bytes, memory size)
    symbols: dict[str, int]  # name -> address (Thumb bit cleared for functions)
    sizes: dict[str, int]
    functions: list[tuple[int, int, str]]  # (address, size, name), sorted

    @classmethod
    def read(cls, path: str | Path) -> Elf:
        data = Path(path).read_bytes()
        if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
            raise M0Error(f"{path}: not a 32-bit little-endian ELF file")
        (e_type, e_machine, _, _, e_phoff, e_shoff, _, _, e_phentsize, e_phnum,
         e_shentsize, e_shnum, _) = struct.unpack_from("<HHIIIIIHHHHHH", data, 16)  # fmt: skip
        if e_machine != 40:
            raise M0Error(f"{path}: ELF machine {e_machine}, expected 40 (ARM)")
        segments = []
        for i in range(e_phnum):
            p_type, p_off, p_vaddr, p_paddr, p_filesz, p_memsz, _, _ = struct.unpack_from(
                "<8I", data, e_phoff + i * e_phentsize
            )
            if p_type == 1 and p_memsz:  # PT_LOAD
                segments.append((p_paddr, data[p_off : p_off + p_filesz], p_memsz))
        sections = [struct.unpack_from("<10I", data, e_shoff + i * e_shentsize) for i in range(e_shnum)]
        symbols, sizes, funcs = {}, {}, []
        for sh in sections:
            if sh[1] != 2:  # SHT_SYMTAB
                continue
            strtab = sections[sh[6]]
            str_off = strtab[4]
            for k in range(sh[5] // 16):
                st_name, st_value, st_size, st_info, _, st_shndx = struct.unpack_from(
                    "<IIIBBH", data, sh[4] + 16 * k
                )
                if st_shndx == 0 or st_info & 0xF not in (1, 2):  # objects and functions
                    continue
                end = data.index(b"\0", str_off + st_name)
                name = data[str_off + st_name : end].decode()
                symbols[name] = st_value & ~1 if st_info & 0xF == 2 else st_value
                sizes[name] = st_size
                if st_info & 0xF == 2:
                    funcs.append((st_value & ~1, st_size, name))
        funcs.sort()
        return cls(segments, symbols, sizes, funcs)

    def function_at(self, addr: int) -> str:
        """Name of the function whose code holds ``addr`` ("?" if none)."""
        i = bisect_right(self.functions, (addr, 1 << 32, "")) - 1
        if i >= 0:
            start, size, name = self.functions[i]
            if not size:  # hand-written code without .size: up to the next function
                size = self.functions[i + 1][0] - start if i + 1 < len(self.functions) else 1 << 32
            if start <= addr < start + size:
                return name
        return "?"


# --- the machine ------------------------------------------------------------------------
class M0Plus:
    """A Cortex-M0+ with an ELF image loaded, ready to call its functions.

    Parameters
    ----------
    elf : path of an ELF file linked for this memory map (:mod:`support.m0build`)
    check_align : bool
        Raise on unaligned loads and stores (an M0+ faults). Costs a Python call per
        memory access; the counts do not depend on it.
    """

    def __init__(self, elf: str | Path, check_align: bool = True) -> None:
        from unicorn import (
            UC_ARCH_ARM,
            UC_HOOK_BLOCK,
            UC_HOOK_MEM_INVALID,
            UC_HOOK_MEM_READ,
            UC_HOOK_MEM_WRITE,
            UC_MODE_MCLASS,
            UC_MODE_THUMB,
            UC_PROT_ALL,
            UC_PROT_EXEC,
            UC_PROT_READ,
            Uc,
        )
        from unicorn.arm_const import UC_CPU_ARM_CORTEX_M0

        self.elf = Elf.read(elf)
        self.symbols = self.elf.symbols
        # Unicorn may ignore the model for M-profile (it runs a Cortex-M33); the decoder
        # above enforces ARMv6-M either way.
        self.uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS, cpu=UC_CPU_ARM_CORTEX_M0)
        uc = self.uc
        uc.mem_map(ROM_BASE, ROM_SIZE, UC_PROT_READ | UC_PROT_EXEC)
        uc.mem_map(FLASH_BASE, FLASH_SIZE, UC_PROT_READ | UC_PROT_EXEC)
        uc.mem_map(SRAM_BASE, SRAM_SIZE, UC_PROT_ALL)
        uc.mem_write(RETURN_STUB, b"\x00\xbf\xfe\xe7")  # nop; b . (never executed)
        heap = SRAM_BASE
        for addr, blob, memsz in self.elf.segments:
            region = _region(addr, memsz)
            if region is None:
                raise M0Error(f"ELF segment {addr:#010x}+{memsz:#x} outside FLASH and SRAM")
            uc.mem_write(addr, blob)
            if region == "sram":
                heap = max(heap, addr + memsz)
        self._heap0 = (heap + 7) & ~7
        self._heap = self._heap0
        self._flash0 = max(
            [FLASH_BASE] + [a + m for a, _, m in self.elf.segments if _region(a, m) == "flash"]
        )
        self._flash = (self._flash0 + 7) & ~7
        self._blocks: dict[tuple[int, int], tuple[int, int, int, int, int, str]] = {}
        self._cycles = 0
        self._insns = 0
        self._profile: dict[str, int] = {}
        self._pending: tuple[int, int, int, str] | None = None  # (target, fallthrough, cond, fn)
        self._fault: str | None = None
        uc.hook_add(UC_HOOK_BLOCK, self._on_block)
        uc.hook_add(UC_HOOK_MEM_INVALID, self._on_invalid)
        if check_align:
            uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, self._on_access)
        self._uc_write = UC_HOOK_MEM_WRITE

    # --- memory ---------------------------------------------------------------------
    def alloc(self, data: bytes | int, align: int = 4, region: str = "sram") -> int:
        """Place bytes (or that many zero bytes) in SRAM or flash; returns the address.

        A bump allocator: :meth:`free_all` releases everything.
        """
        blob = bytes(data)  # an int n gives n zero bytes
        if region == "sram":
            addr = (self._heap + align - 1) & -align
            limit = SRAM_BASE + SRAM_SIZE - STACK_BYTES
        elif region == "flash":
            addr = (self._flash + align - 1) & -align
            limit = FLASH_BASE + FLASH_SIZE
        else:
            raise ValueError(f"region must be 'sram' or 'flash', got {region!r}")
        if addr + len(blob) > limit:
            raise M0Error(f"{region} full: {len(blob)} bytes do not fit below {limit:#010x}")
        self.uc.mem_write(addr, blob)
        if region == "sram":
            self._heap = addr + len(blob)
        else:
            self._flash = addr + len(blob)
        return addr

    def free_all(self) -> None:
        """Forget every :meth:`alloc` (the memory keeps its bytes)."""
        self._heap = self._heap0
        self._flash = (self._flash0 + 7) & ~7

    def read(self, addr: int, n: int) -> bytes:
        return bytes(self.uc.mem_read(addr, n))

    def write(self, addr: int, data: bytes) -> None:
        self.uc.mem_write(addr, bytes(data))

    def address(self, symbol: str) -> int:
        try:
            return self.symbols[symbol]
        except KeyError:
            raise M0Error(f"no symbol {symbol!r} in the ELF image") from None

    # --- calls ----------------------------------------------------------------------
    def call(self, fn: str | int, *args: int, max_instructions: int = 50_000_000) -> CallResult:
        """Call a function with 32-bit integer arguments (AAPCS) and count its cycles.

        The count starts at the function's first instruction and ends when it returns
        (its BX LR / POP {PC} included).
        """
        from unicorn import UcError
        from unicorn.arm_const import (
            UC_ARM_REG_LR,
            UC_ARM_REG_PC,
            UC_ARM_REG_R0,
            UC_ARM_REG_R1,
            UC_ARM_REG_R2,
            UC_ARM_REG_R3,
            UC_ARM_REG_SP,
        )

        uc = self.uc
        addr = self.address(fn) if isinstance(fn, str) else fn
        regs = (UC_ARM_REG_R0, UC_ARM_REG_R1, UC_ARM_REG_R2, UC_ARM_REG_R3)
        sp = SRAM_BASE + SRAM_SIZE
        extra = [int(a) & 0xFFFFFFFF for a in args[4:]]
        sp -= 4 * len(extra)
        sp &= ~7  # AAPCS: 8-byte aligned at a call
        for i, a in enumerate(extra):
            uc.mem_write(sp + 4 * i, struct.pack("<I", a))
        for reg, a in zip(regs, args[:4], strict=False):
            uc.reg_write(reg, int(a) & 0xFFFFFFFF)
        uc.reg_write(UC_ARM_REG_SP, sp)
        uc.reg_write(UC_ARM_REG_LR, RETURN_STUB | 1)
        self._cycles = self._insns = 0
        self._profile = {}
        self._pending = None
        self._fault = None
        try:
            uc.emu_start(addr | 1, RETURN_STUB, count=max_instructions)
        except UcError as e:
            pc = uc.reg_read(UC_ARM_REG_PC)
            raise M0Error(self._fault or f"emulation stopped at pc={pc:#010x}: {e}") from None
        if self._fault:
            raise M0Error(self._fault)
        pc = uc.reg_read(UC_ARM_REG_PC)
        if pc != RETURN_STUB:
            raise M0Error(f"{fn}: did not return within {max_instructions} instructions (pc={pc:#010x})")
        self._resolve(RETURN_STUB)
        return CallResult(uc.reg_read(UC_ARM_REG_R0), self._cycles, self._insns, self._profile)

    # --- hooks ----------------------------------------------------------------------
    def _resolve(self, address: int) -> None:
        """Charge the taken-branch cycle of the previous block's B<cond>, if taken."""
        if self._pending is None:
            return
        target, fallthrough, cond, fn = self._pending
        self._pending = None
        if target != fallthrough:
            taken = address == target
        else:  # both ways lead here: the flags (unchanged by a branch) decide
            from unicorn.arm_const import UC_ARM_REG_XPSR

            psr = self.uc.reg_read(UC_ARM_REG_XPSR)
            taken = _CONDS[cond](psr >> 31 & 1, psr >> 30 & 1, psr >> 29 & 1, psr >> 28 & 1)
        if taken:
            self._cycles += 1
            self._profile[fn] += 1

    def _on_block(self, uc, address: int, size: int, _user) -> None:
        self._resolve(address)
        info = self._blocks.get((address, size))
        if info is None:
            try:
                info = self._decode_block(address, size)
            except M0Error as e:
                self._fault = str(e)
                uc.emu_stop()
                return
            self._blocks[(address, size)] = info
        cycles, insns, kind, target, end, fn = info
        self._cycles += cycles
        self._insns += insns
        self._profile[fn] = self._profile.get(fn, 0) + cycles
        if kind == _COND:
            cond = uc.mem_read(end - 2, 2)[1] & 0xF
            self._pending = (target, end, cond, fn)

    def _decode_block(self, address: int, size: int) -> tuple[int, int, int, int, int, str]:
        code = bytes(self.uc.mem_read(address, size))
        hws = struct.unpack(f"<{size // 2}H", code[: size & ~1])
        i = cycles = insns = 0
        kind = target = 0
        while i < len(hws):
            addr = address + 2 * i
            if kind == _COND:
                raise M0Error(f"conditional branch inside a block at {addr - 2:#010x}")
            nxt = hws[i + 1] if i + 1 < len(hws) else None
            n, c, kind, target = decode(hws[i], nxt, addr)
            cycles += c
            insns += 1
            i += n // 2
        return cycles, insns, kind, target, address + 2 * i, self.elf.function_at(address)

    def _on_access(self, uc, access, address: int, size: int, value: int, _user) -> None:
        if address % size:
            from unicorn.arm_const import UC_ARM_REG_PC

            what = "store" if access == self._uc_write else "load"
            pc = uc.reg_read(UC_ARM_REG_PC)
            self._fault = f"unaligned {size}-byte {what} at {address:#010x} (pc={pc:#010x})"
            uc.emu_stop()

    def _on_invalid(self, uc, access, address: int, size: int, value: int, _user) -> bool:
        from unicorn.arm_const import UC_ARM_REG_PC

        pc = uc.reg_read(UC_ARM_REG_PC)
        self._fault = f"bad {size}-byte access at {address:#010x} (pc={pc:#010x}): unmapped or read-only"
        return False


def _region(addr: int, size: int) -> str | None:
    if FLASH_BASE <= addr and addr + size <= FLASH_BASE + FLASH_SIZE:
        return "flash"
    if SRAM_BASE <= addr and addr + size <= SRAM_BASE + SRAM_SIZE:
        return "sram"
    return None
