"""Instruction scheduling on assembled programs: weight loads moved ahead of vector and
gradient-descent passes.

The control unit issues in order, and a ``loadw`` waits until the vector and
gradient-descent units are idle (their buffer writes and the loader's reads share a
block-RAM port). A ``loadw`` that follows a pass therefore starts only when the pass has
written its last row, and the next ``matmul`` waits for the load. (With
``TPUConfig.overlap_units`` the control unit itself lets a ``loadw`` issue beside a pass
that does not write its rows, unless the pass reads aux rows or parameters, which it
reads through the loader's port: the move still pays before those.) Issued before the pass,
the same load runs while the previous ``matmul`` streams (the weights are double
buffered) and is over before the pass may issue (a pass waits for the loader to be idle,
``n + 2`` cycles after the load, earlier than the array has drained the ``matmul``'s
rows): the load's cycles leave the critical path::

    before                       after
    matmul  ub[..], acc[0]       matmul  ub[..], acc[0]
    vpu     acc[0], ub[40]       loadw   ub[8]            # next layer's weights
    loadw   ub[8]                vpu     acc[0], ub[40]
    matmul  ub[40], acc[0]       matmul  ub[40], acc[0]

A ``loadw`` moves up past a ``vpu`` or ``gd`` only when the pass cannot write the rows it
loads (both addresses use the same index register and the row ranges are disjoint) and no
label names the load (it is not a branch target, so every path that reaches it ran the
pass first and still does). The program's meaning is unchanged: the pass and the load
touch different rows, and the weights the load brings are used by the same ``matmul``.
"""

from ..asm import Program
from ..isa import FLAG_TRANSPOSE_OUT, Op, vpu_transposed_extent

__all__ = ["hoist_weight_loads", "written_rows"]


def written_rows(ins, n):
    """``(register, first, last)`` of the buffer rows a ``vpu`` or ``gd`` may write."""
    base, reg = ins.b
    if ins.op == Op.GD:
        return reg, base, base + ins.count - 1
    if ins.flags & FLAG_TRANSPOSE_OUT:
        return reg, base, base + vpu_transposed_extent(n, ins.count, ins.stride)
    return reg, base, base + (ins.count - 1) * ins.stride


def _independent(load, unit, n):
    reg, first, last = written_rows(unit, n)
    base, load_reg = load.a
    return reg == load_reg and (base + load.count - 1 < first or base > last)


def hoist_weight_loads(program, n):
    """``program`` with each ``loadw`` moved ahead of the ``vpu``/``gd`` passes right
    before it that cannot write its rows (see the module's description)."""
    ins = list(program.instructions)
    targets = {address - program.origin for address in program.labels.values()}
    for i in range(1, len(ins)):
        if ins[i].op != Op.LOADW:
            continue
        at = i
        while (at > 0 and at not in targets and ins[at - 1].op in (Op.VPU, Op.GD)
               and _independent(ins[at], ins[at - 1], n)):
            ins[at - 1], ins[at] = ins[at], ins[at - 1]
            at -= 1
    if ins == list(program.instructions):
        return program
    return Program(tuple(ins), dict(program.labels), program.origin)
