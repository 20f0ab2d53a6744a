"""ISA encoding, decoding, assembler and disassembler."""

import random

import pytest

from tinytpu_hdl.asm import AssemblyError, Program, assemble, disassemble, format_instruction
from tinytpu_hdl.isa import (
    INSTRUCTION_BITS, OPCODES, ConfigReg, DecodeError, Instruction, InstructionLayout, Op,
    decode, encode, used_mask,
)


def random_instruction(rng, op):
    """A random legal instruction of opcode ``op``, built from the OPCODES table."""
    spec = OPCODES[op]
    fields = {"flags": 0, "count": 0, "a": (0, 0), "b": (0, 0), "c": (0, 0), "d": (0, 0),
              "stride": 0}
    for name, path in spec.fields.items():
        slot, _, part = path.partition(".")
        if path == "flags":
            fields["flags"] = rng.randrange(len(ConfigReg)) if op == Op.CFG \
                else rng.randrange(256) & spec.flag_mask
        elif path in ("count",):
            fields["count"] = rng.randrange(1 << 16)
        elif path == "stride":
            fields["stride"] = rng.randrange(256)
        elif part == "reg":
            fields[slot] = (fields[slot][0], rng.randrange(8))
        elif part == "addr":
            fields[slot] = (rng.randrange(1 << 16), fields[slot][1])
        else:
            fields[slot] = (rng.randrange(1 << 16), rng.randrange(8))
    return Instruction(op, **fields)


def test_layout_is_128_bits_and_fields_do_not_overlap():
    assert InstructionLayout.size == INSTRUCTION_BITS == 128
    spans = sorted((f.offset, f.offset + f.width) for _, f in InstructionLayout)
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        assert a1 == b0


@pytest.mark.parametrize("op", list(Op))
def test_encode_decode_roundtrip(op):
    rng = random.Random(int(op))
    for _ in range(50):
        ins = random_instruction(rng, op)
        word = encode(ins)
        assert 0 <= word < 1 << 128
        assert word & 0x3F == int(op)
        assert decode(word) == ins


@pytest.mark.parametrize("op", list(Op))
def test_assemble_disassemble_roundtrip(op):
    rng = random.Random(100 + int(op))
    instructions = [random_instruction(rng, op) for _ in range(30)]
    if op == Op.DJNZ:       # targets must exist to be printed as labels
        instructions = [i.with_operand("target", i.count % 30) for i in instructions]
    text = disassemble(instructions)
    program = assemble(text)
    assert list(program.instructions) == instructions
    assert disassemble(program.instructions) == text


def test_unused_bits_are_illegal():
    rng = random.Random(7)
    for op in Op:
        word = encode(random_instruction(rng, op))
        unused = ~used_mask(op) & ((1 << 128) - 1)
        bits = [b for b in range(128) if unused >> b & 1]
        for bit in rng.sample(bits, 5):
            with pytest.raises(DecodeError, match="unused bits"):
                decode(word | (1 << bit))


def test_unknown_opcode_and_config_register():
    with pytest.raises(DecodeError, match="unknown opcode 0x3f"):
        decode(0x3F)
    word = encode(Instruction(Op.CFG, flags=ConfigReg.LR, count=5))
    with pytest.raises(DecodeError, match="unknown configuration register 3"):
        decode(word + (2 << 6))
    with pytest.raises(ValueError, match="unknown configuration register"):
        encode(Instruction(Op.CFG, flags=7))


def test_encode_rejects_oversized_fields():
    with pytest.raises(ValueError, match="does not fit in 16 bits"):
        encode(Instruction(Op.LOADW, count=1 << 16))
    with pytest.raises(ValueError, match="does not use bits"):
        encode(Instruction(Op.HALT, count=1))


def test_assembler_syntax():
    p = assemble("""
        # comment
        start: cfg leak, 0.5          # float in the scalar format (Q2.14)
               cfg lr, 0x1000
               setr r3, 7
        loop:  matmul ub[r3+4], acc[2], rows=5, stride=2, accumulate
               vpu acc[0], ub[8], rows=2, bias=ub[1], path=act|bias
               addi r3, r3, -1
               djnz r3, loop
               djnz r0, start
               halt
    """)
    assert p.labels == {"start": 0, "loop": 3}
    ins = p.instructions
    assert ins[0] == Instruction(Op.CFG, flags=ConfigReg.LEAK, count=8192)
    assert ins[3] == Instruction(Op.MATMUL, flags=1, count=5, a=(4, 3), b=(2, 0), stride=2)
    assert ins[4].flags == 3 and ins[4].d == (1, 0) and ins[4].stride == 1
    assert ins[5].a == (0xFFFF, 3) and ins[5].b == (0, 3)
    assert ins[6].count == 3 and ins[7].count == 0
    assert format_instruction(ins[5]) == "addi r3, r3, -1"
    assert Program.from_words(p.words).instructions == p.instructions


@pytest.mark.parametrize("text, line, message", [
    ("nop\nfoo r1", 2, "unknown mnemonic 'foo'"),
    ("halt\n\nloadw acc[0], rows=1", 3, "expected a ub address"),
    ("loadw ub[0]", 1, "needs rows=N"),
    ("matmul ub[0], acc[0], rows=2, transpose", 1, "takes no flag 'transpose'"),
    ("vpu acc[0], ub[0], rows=1, path=relu", 1, "unknown pathway stage 'relu'"),
    ("setr r16, 1", 1, r"register r0\.\.r15"),
    ("djnz r1, nowhere", 1, "invalid literal"),
    ("cfg lr, 5.0", 1, "outside the scalar format"),
    ("cfg momentum, 1", 1, "unknown configuration register"),
    ("a: nop\na: nop", 2, "label 'a' defined twice"),
    ("matmul ub[0], acc[0], rows=2, stride=300", 1, "does not fit in 8 bits"),
    ("gd acc[0], ub[0], rows=1, bias=ub[2]", 1, "has no operand 'bias'"),
    ("halt r1", 1, "takes 0 positional"),
])
def test_assembler_errors_name_the_line(text, line, message):
    with pytest.raises(AssemblyError, match=message) as exc:
        assemble(text)
    assert exc.value.line_no == line
    assert str(exc.value).startswith(f"line {line}:")


def test_isa_document_lists_every_opcode_and_error():
    from pathlib import Path

    from tinytpu_hdl.isa import ErrorCode
    text = (Path(__file__).parent.parent / "docs" / "isa.md").read_text()
    for op in Op:
        assert f"| {int(op):#04x} | `{op.name.lower()}" in text, op
    for code in ErrorCode:
        if code:
            assert f"| {int(code)} | {code.name} |" in text, code
