"""Random programs and data for differential fuzzing of the gateware against the model."""

import random
from dataclasses import dataclass

import numpy as np

from ..isa import (
    FLAG_TRANSPOSE_OUT, ConfigReg, Instruction, NUM_REGS, Op, Pathway, encode, used_mask,
    vpu_transposed_extent,
)

__all__ = ["FuzzCase", "random_case"]

#: The register of the counted loop a case may have (no address operand uses it).
LOOP_REG = NUM_REGS - 1


@dataclass
class FuzzCase:
    """A program (as 128-bit words), initial memories and CSR writes."""

    words: list
    ub: np.ndarray
    acc: np.ndarray
    regs: dict
    cfgs: dict
    seed_csr: int
    watchdog: int
    description: str


def _rows(rng, limit):
    return rng.randint(1, max(1, limit))


def random_case(cfg, seed, *, invalid_rate=0.3, length=(4, 14)):
    """A random program for ``cfg``. Addresses are mostly in range, row counts small; with
    probability ``invalid_rate`` one instruction is corrupted (unknown opcode, unused bits,
    out-of-range address, zero rows, ...). Every program ends with ``halt``; counted loops
    with a bounded trip count appear; a watchdog bounds the run."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    n = cfg.n
    ub_depth, acc_depth = cfg.ub_depth, cfg.acc_depth
    # Register values stay small so that base + reg is usually in range.
    regs = {r: rng.randrange(0, 4) if r < 4 else rng.randrange(1 << 16)
            for r in range(1, NUM_REGS)}
    reg_values = {0: 0, **regs}

    # Rows read through the buffer's second copy (loads, aux and bias rows, parameters):
    # below ``loadable``; with a partial copy, one operand in ten may lie anywhere.
    loadable = cfg.ub_loadable_rows

    def read_limit():
        return ub_depth if loadable == ub_depth or rng.random() < 0.1 else loadable

    def ub_operand(rows, stride=1, limit=ub_depth):
        span = (rows - 1) * stride
        reg = rng.choice([0, 0, 1, 2, 3])
        top = max(0, limit - 1 - span - reg_values[reg])
        return (rng.randint(0, top), reg)

    def acc_operand(rows):
        reg = rng.choice([0, 0, 1, 2, 3])
        top = max(0, acc_depth - rows - reg_values[reg])
        return (rng.randint(0, top), reg)

    body = []
    last_dst = None                    # the last MATMUL's accumulator operand
    count = rng.randint(*length)

    def chasing(rows):
        """An accumulator source for a VPU or GD: often the last MATMUL's destination or
        a row near it (the rows a VPU or GD may read while the matmul writes them)."""
        if last_dst is not None and rng.random() < 0.5:
            base = last_dst[0] + rng.choice([0, 0, 0, -1, 1, 2])
            if 0 <= base and base + reg_values[last_dst[1]] + rows <= acc_depth:
                return (base, last_dst[1])
        return acc_operand(rows)
    for _ in range(count):
        op = rng.choice([Op.LOADW, Op.LOADW, Op.MATMUL, Op.MATMUL, Op.MATMUL, Op.VPU, Op.VPU,
                         Op.GD, Op.CFG, Op.SETR, Op.NOP, Op.SYNC, Op.ADDI])
        if op == Op.LOADW:
            rows = _rows(rng, n)
            body.append(Instruction(op, flags=rng.randint(0, 1), count=rows,
                                    a=ub_operand(rows, limit=read_limit())))
        elif op == Op.MATMUL:
            rows = _rows(rng, 6)
            stride = rng.choice([0, 1, 1, 1, 2])
            last_dst = acc_operand(rows)
            body.append(Instruction(op, flags=rng.randint(0, 1), count=rows,
                                    a=ub_operand(rows, stride), b=last_dst, stride=stride))
        elif op == Op.VPU:
            rows = _rows(rng, 5 if rng.random() < 0.75 else 3 * n + 2)
            stride = rng.choice([1, 1, 2])
            path = rng.randrange(16)
            transpose = rng.random() < 0.25
            if transpose:
                # Mostly without the aux operand (with it: BAD_OPERAND); the rows written
                # span the transposed extent.
                if rng.random() < 0.9:
                    path &= Pathway.BIAS | Pathway.ACT
                stride = rng.choice([0, 1, 2, (rows + n - 1) // n])
                extent = vpu_transposed_extent(n, rows, stride)
                path |= FLAG_TRANSPOSE_OUT
            else:
                extent = (rows - 1) * stride
            reg = rng.choice([0, 0, 1, 2, 3])
            dst = (rng.randint(0, max(0, ub_depth - 1 - extent - reg_values[reg])), reg)
            # Aux rows either in place or in the other half of the rows they may lie in.
            limit = read_limit()
            half = limit // 2
            dst_abs = dst[0] + reg_values[dst[1]]
            if rng.random() < 0.3:
                aux = dst
            else:
                lo = 0 if dst_abs >= half else half
                aux = (rng.randint(lo, max(lo, lo + half - 1 - (rows - 1) * stride)), 0)
            bias = (rng.randrange(limit), 0)
            if dst_abs <= bias[0] <= dst_abs + extent:
                bias = ((dst_abs + extent + 1) % limit, 0)
            body.append(Instruction(op, flags=path, count=rows, a=chasing(rows), b=dst,
                                    c=aux, d=bias, stride=stride))
        elif op == Op.GD:
            rows = _rows(rng, 5)
            body.append(Instruction(op, flags=rng.randint(0, 1), count=rows,
                                    a=chasing(rows), b=ub_operand(rows, limit=read_limit())))
        elif op == Op.CFG:
            body.append(Instruction(op, flags=rng.randrange(len(ConfigReg)),
                                    count=rng.randrange(1 << 16)))
        elif op == Op.SETR:
            rd = rng.randint(4, LOOP_REG - 1)          # LOOP_REG is the loop counter
            body.append(Instruction(op, a=(rng.randrange(1 << 16), rd)))
        elif op == Op.ADDI:
            rd = rng.randint(4, LOOP_REG - 1)
            body.append(Instruction(op, a=(rng.randrange(1 << 16), rd),
                                    b=(0, rng.randrange(NUM_REGS))))
        else:
            body.append(Instruction(op))
    words = [encode(i) for i in body]
    description = "valid"
    if rng.random() < invalid_rate:
        index = rng.randrange(len(words))
        kind = rng.choice(["opcode", "unused", "range", "rows", "loadw"])
        ins = body[index]
        if kind == "opcode":
            words[index] = rng.choice([0x07, 0x0F, 0x14, 0x3F]) | (words[index] & ~0x3F)
        elif kind == "unused":
            unused = [b for b in range(128) if not used_mask(ins.op) >> b & 1]
            words[index] |= 1 << rng.choice(unused)
        elif kind == "range" and ins.op in (Op.MATMUL, Op.VPU, Op.GD, Op.LOADW):
            words[index] = encode(Instruction(ins.op, ins.flags, ins.count,
                                              (0xFFF0, ins.a[1]), ins.b, ins.c, ins.d,
                                              ins.stride))
        elif kind == "rows" and ins.op in (Op.MATMUL, Op.VPU, Op.GD, Op.LOADW):
            words[index] = encode(Instruction(ins.op, ins.flags, 0, ins.a, ins.b, ins.c,
                                              ins.d, ins.stride))
        elif kind == "loadw":
            words[index] = encode(Instruction(Op.LOADW, 0, n + 1, (0, 0)))
        description = f"invalid ({kind} at {index})"
    # A counted loop around part of the body (loop register LOOP_REG, not used by addresses).
    if len(words) > 3 and rng.random() < 0.5:
        start = rng.randrange(len(words) - 1)
        trips = rng.randint(1, 3)
        loop = [encode(Instruction(Op.SETR, a=(trips, LOOP_REG)))]
        inner = words[start:]
        words = words[:start] + loop + inner + \
            [encode(Instruction(Op.DJNZ, count=start + 1, a=(0, LOOP_REG)))]
        description += f", loop x{trips}"
    words.append(encode(Instruction(Op.HALT)))
    if len(words) > cfg.imem_depth:
        words = words[:cfg.imem_depth - 1] + [encode(Instruction(Op.HALT))]
    return FuzzCase(
        words=words,
        ub=nprng.integers(cfg.data.min_int, cfg.data.max_int + 1, (ub_depth, n)),
        acc=nprng.integers(-(1 << 26), 1 << 26, (acc_depth, n)),
        regs=regs,
        cfgs={r: rng.randrange(1 << 16) for r in ConfigReg},
        seed_csr=rng.randrange(1 << 32),
        watchdog=rng.choice([20000, 20000, 20000, rng.randint(20, 400)]),
        description=description,
    )
