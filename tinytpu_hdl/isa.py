"""The instruction set, defined once: encoding, opcodes, operand fields, error codes.

The gateware decoder uses :data:`InstructionLayout` and :data:`OPCODES`; the
reference model, the assembler (:mod:`tinytpu_hdl.asm`) and the compiler use
:class:`Instruction` and the same tables. ``docs/isa.md`` describes it for
people.

Every instruction is one 128-bit word with a uniform layout::

    bits      field     meaning
    [5:0]     opcode    see OPCODES
    [13:6]    flags     per-opcode flag bits (transpose, accumulate, pathway, config id)
    [29:14]   count     row count, immediate or branch target
    [49:30]   a         operand slot a: 16-bit address/immediate + 4-bit register
    [69:50]   b         operand slot b
    [89:70]   c         operand slot c
    [109:90]  d         operand slot d
    [117:110] stride    row stride of a strided stream
    [127:118] reserved  must be zero

An address operand is ``base + R[reg]`` (``R0`` reads as zero), computed in
17 bits and checked against the size of the addressed memory. Bits that an
opcode does not use must be zero, or the instruction is illegal.
"""

from dataclasses import dataclass, field, replace
from enum import IntEnum
from functools import lru_cache

from amaranth.lib import data

__all__ = [
    "INSTRUCTION_BITS", "NUM_REGS", "REG_BITS", "OperandLayout", "InstructionLayout", "Op",
    "Pathway", "ConfigReg", "ErrorCode", "FLAG_TRANSPOSE", "FLAG_ACCUMULATE", "FLAG_STOCHASTIC",
    "FLAG_TRANSPOSE_OUT", "vpu_transposed_extent", "OpSpec", "OPCODES", "Instruction",
    "encode", "decode", "DecodeError", "used_mask",
]

INSTRUCTION_BITS = 128
#: Number of index registers R0..R15 (R0 is always zero).
NUM_REGS = 16
ADDR_BITS = 16
REG_BITS = 4
COUNT_BITS = 16
STRIDE_BITS = 8
FLAG_BITS = 8

OperandLayout = data.StructLayout({"addr": ADDR_BITS, "reg": REG_BITS})

InstructionLayout = data.StructLayout({
    "opcode": 6,
    "flags": FLAG_BITS,
    "count": COUNT_BITS,
    "a": OperandLayout,
    "b": OperandLayout,
    "c": OperandLayout,
    "d": OperandLayout,
    "stride": STRIDE_BITS,
    "reserved": INSTRUCTION_BITS - 6 - FLAG_BITS - COUNT_BITS - 4 * (ADDR_BITS + REG_BITS)
                - STRIDE_BITS,
})
assert InstructionLayout.size == INSTRUCTION_BITS


class Op(IntEnum):
    NOP = 0x00
    HALT = 0x01
    SYNC = 0x02
    SETR = 0x03
    ADDI = 0x04
    DJNZ = 0x05
    CFG = 0x06
    LOADW = 0x10
    MATMUL = 0x11
    VPU = 0x12
    GD = 0x13


class Pathway(IntEnum):
    """Vector-unit stage enables (bits of the VPU instruction's ``flags``)."""
    BIAS = 1
    ACT = 2
    LOSS = 4
    DERIV = 8


class ConfigReg(IntEnum):
    """Configuration registers written by ``CFG`` (values in the scalar format)."""
    LEAK = 0
    LR = 1
    LOSS_SCALE = 2


class ErrorCode(IntEnum):
    """Error codes reported in the status register; the runtime raises them as ``TPUError``."""
    NONE = 0
    ILLEGAL_INSTRUCTION = 1   # unknown opcode, reserved or unused bits set, unknown config id
    BAD_OPERAND = 2           # zero row count, LOADW of more rows than the array has
    UB_RANGE = 3              # unified-buffer access beyond its last row
    ACC_RANGE = 4             # accumulator access beyond its last row
    PC_RANGE = 5              # branch or fall-through beyond the instruction memory
    WATCHDOG = 6              # the cycle budget set by the host ran out
    HOST_CONFLICT = 7         # the host wrote a memory while the program ran
    STOPPED = 8               # the host stopped the program


#: Flag bits of LOADW / MATMUL / GD.
FLAG_TRANSPOSE = 1
FLAG_ACCUMULATE = 1
FLAG_STOCHASTIC = 1
#: Flag bit of VPU (above the pathway bits): write the output transposed, by tiles of ``n``
#: rows (see :func:`vpu_transposed_rows`).
FLAG_TRANSPOSE_OUT = 0x10


@dataclass(frozen=True)
class OpSpec:
    """How an opcode uses the uniform layout.

    ``fields`` maps an operand name to the slot it occupies: ``"a"``..``"d"``
    (an address operand: base and register), ``"a.reg"``/``"a.addr"`` (part of
    a slot), ``"count"``, ``"stride"`` or ``"flags"``. ``spaces`` gives the
    memory (``"ub"`` or ``"acc"``) of each address operand.
    """

    op: Op
    fields: dict
    spaces: dict = field(default_factory=dict)
    flag_mask: int = 0


OPCODES = {
    Op.NOP: OpSpec(Op.NOP, {}),
    Op.HALT: OpSpec(Op.HALT, {}),
    Op.SYNC: OpSpec(Op.SYNC, {}),
    Op.SETR: OpSpec(Op.SETR, {"rd": "a.reg", "imm": "a.addr"}),
    Op.ADDI: OpSpec(Op.ADDI, {"rd": "a.reg", "imm": "a.addr", "rs": "b.reg"}),
    Op.DJNZ: OpSpec(Op.DJNZ, {"rd": "a.reg", "target": "count"}),
    Op.CFG: OpSpec(Op.CFG, {"reg": "flags", "value": "count"}, flag_mask=0xFF),
    Op.LOADW: OpSpec(Op.LOADW, {"src": "a", "rows": "count", "flags": "flags"},
                     {"src": "ub"}, flag_mask=FLAG_TRANSPOSE),
    Op.MATMUL: OpSpec(Op.MATMUL, {"src": "a", "dst": "b", "rows": "count", "stride": "stride",
                                  "flags": "flags"},
                      {"src": "ub", "dst": "acc"}, flag_mask=FLAG_ACCUMULATE),
    Op.VPU: OpSpec(Op.VPU, {"src": "a", "dst": "b", "aux": "c", "bias": "d", "rows": "count",
                            "stride": "stride", "flags": "flags"},
                   {"src": "acc", "dst": "ub", "aux": "ub", "bias": "ub"},
                   flag_mask=0xF | FLAG_TRANSPOSE_OUT),
    Op.GD: OpSpec(Op.GD, {"src": "a", "param": "b", "rows": "count", "flags": "flags"},
                  {"src": "acc", "param": "ub"}, flag_mask=FLAG_STOCHASTIC),
}


@lru_cache(maxsize=None)
def _field_bits(path):
    """(offset, width) of a field path like ``"a.reg"`` in :data:`InstructionLayout`."""
    layout, offset = InstructionLayout, 0
    for part in path.split("."):
        f = layout[part]
        offset += f.offset
        layout = f.shape
    width = layout.size if isinstance(layout, data.Layout) else layout
    return offset, int(width)


@lru_cache(maxsize=None)
def used_mask(op):
    """Bit mask of the instruction bits opcode ``op`` may set (opcode field included)."""
    spec = OPCODES[Op(op)]
    mask = (1 << 6) - 1
    for name, path in spec.fields.items():
        if path == "flags":
            off, _ = _field_bits("flags")
            mask |= spec.flag_mask << off
            continue
        off, width = _field_bits(path)
        mask |= ((1 << width) - 1) << off
    return mask


class DecodeError(ValueError):
    """A word is not a legal instruction."""


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction. Address operands are ``(base, reg)`` pairs."""

    op: Op
    flags: int = 0
    count: int = 0
    a: tuple = (0, 0)
    b: tuple = (0, 0)
    c: tuple = (0, 0)
    d: tuple = (0, 0)
    stride: int = 0

    def operand(self, name):
        """The value of a named operand of this opcode (see :data:`OPCODES`)."""
        path = OPCODES[self.op].fields[name]
        slot, _, part = path.partition(".")
        value = getattr(self, slot)
        if part == "reg":
            return value[1]
        if part == "addr":
            return value[0]
        return value

    def with_operand(self, name, value):
        path = OPCODES[self.op].fields[name]
        slot, _, part = path.partition(".")
        if part:
            cur = getattr(self, slot)
            value = (value, cur[1]) if part == "addr" else (cur[0], value)
        return replace(self, **{slot: value})


def encode(ins: Instruction) -> int:
    """Encode an :class:`Instruction` to a 128-bit integer; validates every field."""
    op = Op(ins.op)
    word = 0

    def put(path, value):
        nonlocal word
        off, width = _field_bits(path)
        if not 0 <= value < (1 << width):
            raise ValueError(f"{op.name}: field {path} = {value} does not fit in {width} bits")
        word |= value << off

    put("opcode", int(op))
    put("flags", ins.flags)
    put("count", ins.count)
    for slot in "abcd":
        base, reg = getattr(ins, slot)
        put(f"{slot}.addr", base)
        put(f"{slot}.reg", reg)
    put("stride", ins.stride)
    extra = word & ~used_mask(op)
    if extra:
        raise ValueError(f"{op.name} does not use bits {extra:#x} of the instruction word")
    if op == Op.CFG and ins.flags not in set(ConfigReg):
        raise ValueError(f"CFG names unknown configuration register {ins.flags}")
    return word


def decode(word: int) -> Instruction:
    """Decode a 128-bit integer; raises :class:`DecodeError` for an illegal word."""
    return _decode(int(word))


@lru_cache(maxsize=1 << 16)
def _decode(word):
    if not 0 <= word < (1 << INSTRUCTION_BITS):
        raise DecodeError(f"instruction word {word:#x} is not a {INSTRUCTION_BITS}-bit value")

    def get(path):
        off, width = _field_bits(path)
        return (word >> off) & ((1 << width) - 1)

    opcode = get("opcode")
    try:
        op = Op(opcode)
    except ValueError:
        raise DecodeError(f"unknown opcode {opcode:#04x}") from None
    extra = word & ~used_mask(op)
    if extra:
        raise DecodeError(f"{op.name} word {word:#034x} sets unused bits {extra:#x}")
    if op == Op.CFG and get("flags") not in set(ConfigReg):
        raise DecodeError(f"CFG names unknown configuration register {get('flags')}")
    return Instruction(op, get("flags"), get("count"),
                       *[(get(f"{s}.addr"), get(f"{s}.reg")) for s in "abcd"],
                       get("stride"))


def vpu_transposed_extent(n, rows, stride):
    """The last buffer row a transposed VPU (``FLAG_TRANSPOSE_OUT``) of ``rows`` rows writes,
    relative to ``dst``: its output rows form ``ceil(rows / n)`` tiles of ``n`` rows, and row
    ``k`` of tile ``t`` (lane ``j`` = lane ``k`` of output row ``t * n + j``, zero past the
    last row) is written to ``dst + t + k * stride``."""
    return (rows - 1) // n + (n - 1) * stride
