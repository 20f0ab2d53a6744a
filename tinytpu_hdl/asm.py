"""Text assembler and disassembler for the ISA in :mod:`tinytpu_hdl.isa`.

Syntax (one instruction per line; ``#`` starts a comment; ``name:`` defines a label)::

    nop | halt | sync
    setr   rD, IMM                      # R[D] = IMM
    addi   rD, rS, IMM                  # R[D] = R[S] + IMM (mod 2**16; IMM may be negative)
    djnz   rD, LABEL                    # R[D] -= 1; jump to LABEL if R[D] != 0
    cfg    leak|lr|loss_scale, VALUE    # VALUE: raw integer, or a float in the scalar format
    loadw  ub[A], rows=N [, transpose]
    matmul ub[A], acc[A], rows=N [, stride=S] [, accumulate]
    vpu    acc[A], ub[A], rows=N [, aux=ub[A]] [, bias=ub[A]] [, path=bias|act|loss|deriv]
           [, stride=S] [, transpose]
    gd     acc[A], ub[A], rows=N [, stochastic]

An address ``A`` is ``NUM``, ``rK`` or ``rK+NUM``. ``stride`` defaults to 1.
"""

import re
from dataclasses import dataclass

from .isa import (
    FLAG_ACCUMULATE, FLAG_STOCHASTIC, FLAG_TRANSPOSE, FLAG_TRANSPOSE_OUT, NUM_REGS, ConfigReg,
    Instruction, Op, Pathway, decode, encode,
)
from .numeric import FixedFormat

__all__ = ["AssemblyError", "Program", "assemble", "disassemble", "format_instruction",
           "check_program"]

DEFAULT_SCALAR = FixedFormat(16, 14)


class AssemblyError(ValueError):
    """Malformed assembly text; the message names the line."""

    def __init__(self, line_no, line, message):
        self.line_no = line_no
        super().__init__(f"line {line_no}: {message}: {line.strip()!r}")


@dataclass(frozen=True)
class Program:
    """An assembled program: instructions and the labels that named them."""

    instructions: tuple
    labels: dict
    origin: int = 0

    @property
    def words(self):
        return [encode(i) for i in self.instructions]

    @classmethod
    def from_words(cls, words):
        return cls(tuple(decode(w) for w in words), {})

    def __len__(self):
        return len(self.instructions)

    @property
    def text(self):
        return disassemble(self.instructions, self.labels, origin=self.origin)


_ADDR = re.compile(r"^(ub|acc)\[\s*(?:r(\d+)\s*(?:\+\s*(\w+))?|(\w+)(?:\s*\+\s*r(\d+))?)\s*\]$")
_REG = re.compile(r"^r(\d+)$")


def _int(text):
    return int(text, 0)


def _split_operands(rest):
    parts, depth, cur = [], 0, ""
    for ch in rest:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur.strip())
    return parts


def assemble(text, *, scalar: FixedFormat = DEFAULT_SCALAR, origin=0) -> Program:
    """Assemble ``text``; raises :class:`AssemblyError` naming the line of any mistake.

    ``origin`` is the instruction-memory address of the first instruction: labels (and so
    branch targets) are addresses, so a program assembled for an origin runs from there."""
    if not isinstance(origin, int) or not 0 <= origin < 1 << 16:
        raise ValueError(f"origin must be an instruction address from 0 to 65535, "
                         f"not {origin!r}")
    lines = text.splitlines()
    labels = {}
    pending = []
    for no, line in enumerate(lines, 1):
        body = line.split("#", 1)[0].strip()
        while True:
            m = re.match(r"^([A-Za-z_]\w*)\s*:\s*(.*)$", body)
            if not m:
                break
            if m.group(1) in labels:
                raise AssemblyError(no, line, f"label {m.group(1)!r} defined twice")
            labels[m.group(1)] = origin + len(pending)
            body = m.group(2)
        if body:
            pending.append((no, line, body))
    instructions = []
    for no, line, body in pending:
        try:
            instructions.append(_parse(body, labels, scalar))
        except AssemblyError:
            raise
        except (ValueError, KeyError, IndexError) as exc:
            raise AssemblyError(no, line, str(exc)) from None
    return Program(tuple(instructions), labels, origin)


def _reg(text):
    m = _REG.match(text.strip())
    if not m or not 0 <= int(m.group(1)) < NUM_REGS:
        raise ValueError(f"expected a register r0..r{NUM_REGS - 1}, not {text!r}")
    return int(m.group(1))


def _address(text, space):
    m = _ADDR.match(text.strip())
    if not m:
        raise ValueError(f"expected an address {space}[...], not {text!r}")
    if m.group(1) != space:
        raise ValueError(f"expected a {space} address, not {text!r}")
    if m.group(2) is not None:
        reg, base = int(m.group(2)), _int(m.group(3)) if m.group(3) else 0
    else:
        base, reg = _int(m.group(4)), int(m.group(5)) if m.group(5) else 0
    if not 0 <= reg < NUM_REGS:
        raise ValueError(f"register r{reg} does not exist (r0..r{NUM_REGS - 1})")
    if not 0 <= base < 1 << 16:
        raise ValueError(f"address {base} does not fit in 16 bits")
    return (base, reg)


def _imm16(text):
    value = _int(text)
    if not -(1 << 15) <= value < (1 << 16):
        raise ValueError(f"immediate {value} does not fit in 16 bits")
    return value & 0xFFFF


def _parse(body, labels, scalar):
    mnemonic, _, rest = body.partition(" ")
    try:
        op = Op[mnemonic.strip().upper()]
    except KeyError:
        raise ValueError(f"unknown mnemonic {mnemonic!r}") from None
    ops = _split_operands(rest)
    flag_names = ("transpose", "accumulate", "stochastic")
    positional = [o for o in ops if "=" not in o and o not in flag_names]
    keywords = dict(o.split("=", 1) for o in ops if "=" in o)
    keywords = {k.strip(): v.strip() for k, v in keywords.items()}
    words = {o for o in ops if o in flag_names}

    def need(n):
        if len(positional) != n:
            raise ValueError(f"{op.name.lower()} takes {n} positional operand(s), "
                             f"not {len(positional)}")

    allowed = {Op.LOADW: {"rows"}, Op.MATMUL: {"rows", "stride"}, Op.GD: {"rows"},
               Op.VPU: {"rows", "stride", "aux", "bias", "path"}}.get(op, set())
    unknown = set(keywords) - allowed
    if unknown:
        raise ValueError(f"{op.name.lower()} has no operand {sorted(unknown)[0]!r}")
    flag_words = {Op.LOADW: {"transpose"}, Op.MATMUL: {"accumulate"},
                  Op.GD: {"stochastic"}, Op.VPU: {"transpose"}}.get(op, set())
    if words - flag_words:
        raise ValueError(f"{op.name.lower()} takes no flag {sorted(words - flag_words)[0]!r}")

    def rows():
        if "rows" not in keywords:
            raise ValueError(f"{op.name.lower()} needs rows=N")
        value = _int(keywords["rows"])
        if not 0 <= value < 1 << 16:
            raise ValueError(f"rows={value} does not fit in 16 bits")
        return value

    def stride():
        value = _int(keywords.get("stride", "1"))
        if not 0 <= value < 256:
            raise ValueError(f"stride={value} does not fit in 8 bits")
        return value

    if op in (Op.NOP, Op.HALT, Op.SYNC):
        need(0)
        return Instruction(op)
    if op == Op.SETR:
        need(2)
        return Instruction(op, a=(_imm16(positional[1]), _reg(positional[0])))
    if op == Op.ADDI:
        need(3)
        return Instruction(op, a=(_imm16(positional[2]), _reg(positional[0])),
                           b=(0, _reg(positional[1])))
    if op == Op.DJNZ:
        need(2)
        target = positional[1]
        value = labels[target] if target in labels else _int(target)
        if not 0 <= value < 1 << 16:
            raise ValueError(f"branch target {value} does not fit in 16 bits")
        return Instruction(op, count=value, a=(0, _reg(positional[0])))
    if op == Op.CFG:
        need(2)
        try:
            reg = ConfigReg[positional[0].upper()]
        except KeyError:
            raise ValueError(f"unknown configuration register {positional[0]!r}") from None
        text = positional[1]
        if re.fullmatch(r"[-+]?(0x[0-9a-fA-F]+|\d+)", text):
            value = _imm16(text)
        else:
            raw, clipped = scalar.encode(float(text), return_clipped=True)
            if clipped:
                raise ValueError(f"{text} is outside the scalar format {scalar}")
            value = int(raw) & 0xFFFF
        return Instruction(op, flags=int(reg), count=value)
    if op == Op.LOADW:
        need(1)
        return Instruction(op, flags=FLAG_TRANSPOSE if "transpose" in words else 0,
                           count=rows(), a=_address(positional[0], "ub"))
    if op == Op.MATMUL:
        need(2)
        return Instruction(op, flags=FLAG_ACCUMULATE if "accumulate" in words else 0,
                           count=rows(), a=_address(positional[0], "ub"),
                           b=_address(positional[1], "acc"), stride=stride())
    if op == Op.VPU:
        need(2)
        path = 0
        if keywords.get("path"):
            for name in keywords["path"].split("|"):
                try:
                    path |= Pathway[name.strip().upper()]
                except KeyError:
                    raise ValueError(f"unknown pathway stage {name.strip()!r}") from None
        if "transpose" in words:
            path |= FLAG_TRANSPOSE_OUT
        return Instruction(op, flags=path, count=rows(), a=_address(positional[0], "acc"),
                           b=_address(positional[1], "ub"),
                           c=_address(keywords["aux"], "ub") if "aux" in keywords else (0, 0),
                           d=_address(keywords["bias"], "ub") if "bias" in keywords else (0, 0),
                           stride=stride())
    if op == Op.GD:
        need(2)
        return Instruction(op, flags=FLAG_STOCHASTIC if "stochastic" in words else 0,
                           count=rows(), a=_address(positional[0], "acc"),
                           b=_address(positional[1], "ub"))
    raise ValueError(f"no syntax for {op.name}")  # every Op is handled above


def _fmt_addr(space, operand):
    base, reg = operand
    if reg:
        return f"{space}[r{reg}+{base}]" if base else f"{space}[r{reg}]"
    return f"{space}[{base}]"


def format_instruction(ins: Instruction, labels_by_index=None) -> str:
    """Canonical text of one instruction (assembles back to the same word)."""
    op = ins.op
    name = op.name.lower()
    if op in (Op.NOP, Op.HALT, Op.SYNC):
        return name
    if op == Op.SETR:
        return f"setr r{ins.a[1]}, {ins.a[0]}"
    if op == Op.ADDI:
        imm = ins.a[0] - (1 << 16) if ins.a[0] >= 1 << 15 else ins.a[0]
        return f"addi r{ins.a[1]}, r{ins.b[1]}, {imm}"
    if op == Op.DJNZ:
        target = (labels_by_index or {}).get(ins.count, str(ins.count))
        return f"djnz r{ins.a[1]}, {target}"
    if op == Op.CFG:
        return f"cfg {ConfigReg(ins.flags).name.lower()}, {ins.count:#06x}"
    if op == Op.LOADW:
        text = f"loadw {_fmt_addr('ub', ins.a)}, rows={ins.count}"
        return text + (", transpose" if ins.flags & FLAG_TRANSPOSE else "")
    if op == Op.MATMUL:
        text = f"matmul {_fmt_addr('ub', ins.a)}, {_fmt_addr('acc', ins.b)}, rows={ins.count}"
        if ins.stride != 1:
            text += f", stride={ins.stride}"
        return text + (", accumulate" if ins.flags & FLAG_ACCUMULATE else "")
    if op == Op.VPU:
        text = f"vpu {_fmt_addr('acc', ins.a)}, {_fmt_addr('ub', ins.b)}, rows={ins.count}"
        if ins.c != (0, 0):
            text += f", aux={_fmt_addr('ub', ins.c)}"
        if ins.d != (0, 0):
            text += f", bias={_fmt_addr('ub', ins.d)}"
        if ins.flags & 0xF:
            text += ", path=" + "|".join(p.name.lower() for p in Pathway if ins.flags & p)
        if ins.stride != 1:
            text += f", stride={ins.stride}"
        return text + (", transpose" if ins.flags & FLAG_TRANSPOSE_OUT else "")
    if op == Op.GD:
        text = f"gd {_fmt_addr('acc', ins.a)}, {_fmt_addr('ub', ins.b)}, rows={ins.count}"
        return text + (", stochastic" if ins.flags & FLAG_STOCHASTIC else "")
    raise ValueError(f"no syntax for {op.name}")


def disassemble(instructions, labels=None, *, origin=0) -> str:
    """Text of a sequence of :class:`Instruction` (or 128-bit words), with labels; the first
    instruction is at address ``origin``."""
    instructions = [decode(i) if isinstance(i, int) else i for i in instructions]
    by_index = {}
    for name, index in (labels or {}).items():
        by_index.setdefault(index, name)
    for ins in instructions:
        if ins.op == Op.DJNZ and ins.count not in by_index:
            by_index[ins.count] = f"L{ins.count}"
    lines = []
    for i, ins in enumerate(instructions, origin):
        if i in by_index:
            lines.append(f"{by_index[i]}:")
        lines.append("    " + format_instruction(ins, by_index))
    for index, name in sorted(by_index.items()):
        if not origin <= index < origin + len(instructions):
            lines.append(f"{name}:")
    return "\n".join(lines) + "\n"


def check_program(program):
    """Refuse a program that could run instructions it does not contain: empty, no
    ``halt`` reachable from its first instruction, or a path that falls off its end (or
    branches outside it) into whatever the instruction memory holds there. Follows every
    branch both ways (``djnz r0`` always jumps); raises :class:`ValueError`."""
    instructions = program.instructions if isinstance(program, Program) else tuple(program)
    origin = program.origin if isinstance(program, Program) else 0
    if not instructions:
        raise ValueError("the program is empty: it would run whatever an earlier program left "
                         "in the instruction memory")
    end = origin + len(instructions)
    seen, todo, halts = set(), [origin], False
    while todo:
        pc = todo.pop()
        if pc in seen:
            continue
        seen.add(pc)
        ins = instructions[pc - origin]
        if ins.op == Op.HALT:
            halts = True
            continue
        successors = [pc + 1]
        if ins.op == Op.DJNZ:
            successors = [ins.count] if ins.a[1] == 0 else [ins.count, pc + 1]
        for nxt in successors:
            if not origin <= nxt < end:
                what = "branches to" if nxt != pc + 1 else "falls through to"
                raise ValueError(f"the instruction at address {pc} "
                                 f"({format_instruction(ins)}) {what} address {nxt}, outside "
                                 f"the program ({origin}..{end - 1}): it would run whatever "
                                 f"the instruction memory holds there; end the program with "
                                 f"halt")
            todo.append(nxt)
    if not halts:
        raise ValueError("no halt is reachable from the program's first instruction: it "
                         "cannot end but by the watchdog")
