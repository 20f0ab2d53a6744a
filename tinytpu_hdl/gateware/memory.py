"""On-chip memories (unified buffer, accumulators) and the request ports that share them.

Every engine that uses a memory owns a *request port* (:func:`read_request`,
:func:`write_request`). An engine drives its address, data and enable to
zero while it is not using the port, and the control unit guarantees that
two engines never use the same memory port in the same cycle, so the
requests are combined with a plain OR (:func:`share_read`,
:func:`share_write`), as on a wired-OR bus.

Read timing: the address and ``en`` presented in cycle ``t`` give the row
on ``data`` in cycle ``t + 1`` (and the data holds while ``en`` is low).
A write presented in cycle ``t`` is visible to reads presented in cycle
``t + 1``; a port declared ``transparent`` also sees it in cycle ``t``.
"""

from amaranth.hdl import Module, Value
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["read_request", "write_request", "RowMemory", "UnifiedBuffer", "AccumulatorMemory",
           "share_read", "share_write", "addr_width"]


def addr_width(depth):
    return max(1, ceil_log2(depth))


def read_request(depth, shape):
    """Signature of a read requester: ``addr``, ``en`` out; ``data`` in."""
    return wiring.Signature({"addr": Out(addr_width(depth)), "en": Out(1), "data": In(shape)})


def write_request(depth, shape):
    """Signature of a write requester: ``addr``, ``data``, ``en`` out."""
    return wiring.Signature({"addr": Out(addr_width(depth)), "data": Out(shape), "en": Out(1)})


class RowMemory(wiring.Component):
    """A memory of ``depth`` rows of ``shape`` with ``read_ports`` synchronous read ports
    ``r0``, ``r1``, ... and one write port ``w``.

    Built on :class:`amaranth.lib.memory.Memory`, so synthesis infers block RAM.
    """

    def __init__(self, depth, shape, *, read_ports=1, transparent=False, init=()):
        self._depth = depth
        self._shape = shape
        self._read_ports = read_ports
        self._transparent = transparent
        self._init = list(init)
        members = {f"r{i}": In(read_request(depth, shape)) for i in range(read_ports)}
        members["w"] = In(write_request(depth, shape))
        super().__init__(members)

    @property
    def depth(self):
        return self._depth

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=self._shape, depth=self._depth, init=self._init)
        wp = mem.write_port()
        m.d.comb += [wp.addr.eq(self.w.addr), wp.data.eq(self.w.data), wp.en.eq(self.w.en)]
        for i in range(self._read_ports):
            req = getattr(self, f"r{i}")
            rp = mem.read_port(transparent_for=(wp,) if self._transparent else ())
            m.d.comb += [rp.addr.eq(req.addr), rp.en.eq(req.en), req.data.eq(rp.data)]
        return m


class UnifiedBuffer(RowMemory):
    """The unified buffer: ``depth`` rows of ``n`` data-format words.

    Two read ports (``r0``: input streams, vector-unit operands, host reads;
    ``r1``: weight loads and the bias row) and one write port ``w`` (vector
    unit, gradient-descent unit, host), so that a matrix streams into the
    array while the next weight tile loads.
    """

    def __init__(self, cfg, depth):
        super().__init__(depth, data.ArrayLayout(cfg.data.shape, cfg.n), read_ports=2)


class AccumulatorMemory(RowMemory):
    """The accumulators: ``depth`` rows of ``n`` accumulator-format words.

    One read port ``r0``, transparent to the write port ``w`` so that a row
    being accumulated in one cycle can be read back in the same cycle by
    the next accumulation to the same row.
    """

    def __init__(self, cfg, depth):
        super().__init__(depth, data.ArrayLayout(cfg.acc.shape, cfg.n), read_ports=1,
                         transparent=True)


def share_read(m, port, requesters):
    """Connect several read requesters to one memory read port (wired OR)."""
    addr = 0
    en = 0
    for req in requesters:
        addr = addr | req.addr
        en = en | req.en
        m.d.comb += req.data.eq(port.data)
    m.d.comb += [port.addr.eq(addr), port.en.eq(en)]


def share_write(m, port, requesters):
    """Connect several write requesters to one memory write port (wired OR)."""
    addr = 0
    dat = 0
    en = 0
    for req in requesters:
        addr = addr | req.addr
        dat = dat | Value.cast(req.data)
        en = en | req.en
    m.d.comb += [port.addr.eq(addr), Value.cast(port.data).eq(dat), port.en.eq(en)]
