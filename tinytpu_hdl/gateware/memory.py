"""On-chip memories (unified buffer, accumulators) and the request ports that share them.

Every engine that uses a memory owns a *request port* (:func:`read_request`,
:func:`write_request`), and the control unit guarantees that two engines
never use the same memory port in the same cycle. A read requester drives
its address and ``en`` to zero while it is not using the port, so the read
requests are combined with a plain OR (:func:`share_read`), as on a wired-OR
bus. A write requester only needs to drive ``en`` low: the write port takes
the address and data of the requester whose ``en`` is high
(:func:`share_write`), so that no engine spends a gate per data bit on
zeroing its write data.

Read timing: the address and ``en`` presented in cycle ``t`` give the row
on ``data`` in cycle ``t + 1`` (and the data holds while ``en`` is low).
A write presented in cycle ``t`` is visible to reads presented in cycle
``t + 1``; a port declared ``transparent`` also sees it in cycle ``t``.

Read-write collisions: no engine and no host command ever uses a row read
through a port that is not transparent in the cycle in which the same row is
written. In the unified buffer and the instruction memory such reads do not
happen at all (the control unit's issue rules keep the writers and readers
apart; :class:`~tinytpu_hdl.runtime.pysim.PysimTransport` checks it in
simulation with ``check_collisions=True``); in the accumulators the matmul
engine's accumulate read may meet the write of a row three rows ahead of it,
and the engine forwards that row's sum instead of using what it read.
Synthesis is told so by :data:`SYNTHESIS_SCRIPT`: without it Yosys emulates
Amaranth's read-old-data rule on block RAMs that do not have it (the
iCE40's), with a register and a bypass multiplexer for every data bit (about
300 logic cells for the 1x1 TPU's memories).
"""

from amaranth.hdl import Const, Module, Mux, Shape, ShapeCastable, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["SYNTHESIS_SCRIPT", "read_request", "write_request", "RowMemory", "UnifiedBuffer",
           "AccumulatorMemory", "share_read", "share_write", "addr_width", "collision_checker",
           "registered_row"]


#: Yosys commands to run after reading the design: reads of a row in the cycle it is
#: written are "don't care" on every read port that is not transparent (see the module
#: documentation for why that holds).
SYNTHESIS_SCRIPT = "setparam -set COLLISION_X_MASK 1 t:$memrd_v2 r:TRANSPARENCY_MASK=1'0 %i"


def addr_width(depth):
    return max(1, ceil_log2(depth))


def read_request(depth, shape):
    """Signature of a read requester: ``addr``, ``en`` out; ``data`` in."""
    return wiring.Signature({"addr": Out(addr_width(depth)), "en": Out(1), "data": In(shape)})


def write_request(depth, shape, granules=1):
    """Signature of a write requester: ``addr``, ``data``, ``en`` out; ``en`` has a bit
    per ``granules`` equal parts of the row (1: whole rows)."""
    return wiring.Signature({"addr": Out(addr_width(depth)), "data": Out(shape),
                             "en": Out(granules)})


class RowMemory(wiring.Component):
    """A memory of ``depth`` rows of ``shape`` with ``read_ports`` synchronous read ports
    ``r0``, ``r1``, ... and one write port ``w``.

    Built on :class:`amaranth.lib.memory.Memory`, so synthesis infers block RAM. With
    ``granularity`` (bits of an unsigned ``shape``), ``w.en`` has one bit per part of
    that many bits, written independently.

    With ``shared_port=i``, read port ``ri`` and the write port share one address (the
    write's while ``w.en`` is high, else the read's), so that a block RAM with two ports
    holds the memory once (one port reads ``r0``, the other reads ``ri`` or writes)
    instead of once per read port. Its users must never read through ``ri`` in a cycle
    in which the memory is written (:func:`collision_checker` checks it in simulation).

    With ``registered``, every read port's data is registered once more and arrives two
    cycles after its request: a :class:`~.block_ram.BlockRAM` (a copy of the
    memory) per read port, whose register is the block RAM's output register on ECP5
    (``family``).
    """

    def __init__(self, depth, shape, *, read_ports=1, transparent=False, init=(),
                 granularity=None, shared_port=None, registered=False, family=None):
        if shared_port is not None and not 0 <= shared_port < read_ports:
            raise ValueError(f"shared_port must name one of the {read_ports} read ports, "
                             f"not {shared_port!r}")
        if registered and (shared_port is not None or granularity is not None):
            raise ValueError("a RowMemory with registered reads has neither a shared port "
                             "nor a write granularity")
        self._registered = registered
        self._family = family
        self._depth = depth
        self._shape = shape
        self._read_ports = read_ports
        self._transparent = transparent
        self._init = list(init)
        self._granularity = granularity
        self._shared_port = shared_port
        granules = 1 if granularity is None else Shape.cast(shape).width // granularity
        members = {f"r{i}": In(read_request(depth, shape)) for i in range(read_ports)}
        members["w"] = In(write_request(depth, shape, granules))
        super().__init__(members)

    @property
    def depth(self):
        return self._depth

    @property
    def read_ports(self):
        return self._read_ports

    @property
    def shared_port(self):
        return self._shared_port

    @property
    def registered(self):
        return self._registered

    def elaborate(self, platform):
        if self._registered:
            return self._elaborate_registered()
        m = Module()
        m.submodules.mem = mem = Memory(shape=self._shape, depth=self._depth, init=self._init)
        wp = mem.write_port(granularity=self._granularity)
        w_addr = self.w.addr
        if self._shared_port is not None:
            # One address signal for the write and the shared read (Yosys then maps the pair
            # to one read-write block RAM port).
            r_addr = getattr(self, f"r{self._shared_port}").addr
            w_addr = Signal.like(self.w.addr, name="shared_addr")
            m.d.comb += w_addr.eq(Mux(self.w.en.any(), self.w.addr, r_addr))
        m.d.comb += [wp.addr.eq(w_addr), wp.data.eq(self.w.data), wp.en.eq(self.w.en)]
        for i in range(self._read_ports):
            req = getattr(self, f"r{i}")
            rp = mem.read_port(transparent_for=(wp,) if self._transparent else ())
            addr = w_addr if i == self._shared_port else req.addr
            m.d.comb += [rp.addr.eq(addr), rp.en.eq(req.en), req.data.eq(rp.data)]
        return m

    def _elaborate_registered(self):
        from .block_ram import BlockRAM
        m = Module()
        width = Shape.cast(self._shape).width
        init = [_raw_row(self._shape, row) for row in self._init]
        for i in range(self._read_ports):
            req = getattr(self, f"r{i}")
            ram = BlockRAM(self._depth, width, family=self._family, init=init,
                                    transparent=self._transparent)
            m.submodules[f"copy{i}"] = ram
            m.d.comb += [ram.w.addr.eq(self.w.addr), ram.w.data.eq(Value.cast(self.w.data)),
                         ram.w.en.eq(self.w.en), ram.r.addr.eq(req.addr),
                         ram.r.en.eq(req.en), Value.cast(req.data).eq(ram.r.data)]
        return m


class UnifiedBuffer(RowMemory):
    """The unified buffer: ``depth`` rows of ``n`` data-format words.

    Two read ports (``r0``: input streams, vector-unit aux rows, gradient-descent
    parameters, host reads; ``r1``: weight loads and the bias row) and one write port ``w``
    (vector unit, gradient-descent unit, host), so that a matrix streams into the array
    while the next weight tile loads. ``r1`` shares its address with ``w``
    (``shared_port``): a block RAM with two ports holds the buffer once. The control
    unit's issue rules keep them apart: a weight load waits until the vector and
    gradient-descent units are idle, the vector unit reads its bias row before its first
    write, and the host writes only while no program runs.

    With ``cfg.overlap_units`` ``r1`` has an address of its own: the buffer is held twice
    (each copy written by ``w``, one read by ``r0``, the other by ``r1``), so that weight
    loads run while a vector or gradient-descent pass writes other rows; ``r0`` then serves
    the input streams and the host, and the aux rows and parameters are read through
    ``r1``. The second copy holds rows ``0 .. cfg.ub_copy_depth - 1`` only, when set
    (``r1`` reads only those: the control unit checks the operands read through it; a
    write above them goes to the first copy alone).
    """

    def __init__(self, cfg, depth, *, init=(), family=None):
        super().__init__(depth, data.ArrayLayout(cfg.data.shape, cfg.n), read_ports=2,
                         shared_port=None if cfg.overlap_units else 1, init=init)
        self._copy_depth = cfg.ub_copy_depth if cfg.overlap_units else None
        self._registered_ports = self.registered_reads(cfg)
        self._family = family

    @staticmethod
    def registered_reads(cfg):
        """Whether each read port's data is registered once more, arriving two cycles after
        its request instead of one: with ``cfg.overlap_units`` (``r0`` serves the matmul
        engine and the host, ``r1`` the weight loader and the units),
        ``cfg.registered_requests`` and ``cfg.registered_weight_rows``. The engines, which
        registered the row each by itself in that cycle (the matmul engine its input row,
        the loader its weight row, the units their bias, aux and parameter rows), then take
        the port's register instead, which is the block RAMs' output register on ECP5
        (:class:`~.block_ram.BlockRAM`; one register in the fabric, after the
        multiplexer over the block RAMs, elsewhere); the host latches what it reads a
        cycle later."""
        return cfg.overlap_units and cfg.registered_requests and cfg.registered_weight_rows

    @staticmethod
    def registered_row(m, cfg, port_data, name):
        """A row an engine read from the buffer in cycle ``t``, registered in ``t+1``: the
        port's own register where it has one (:meth:`registered_reads`), else a register
        ``name`` of the engine's in ``m``."""
        return registered_row(m, UnifiedBuffer.registered_reads(cfg), port_data, name)

    def elaborate(self, platform):
        if self._copy_depth is None and not self._registered_ports:
            return super().elaborate(platform)
        from .block_ram import BlockRAM
        m = Module()
        copy_depth = self._depth if self._copy_depth is None else self._copy_depth
        width = Shape.cast(self._shape).width
        init = [_raw_row(self._shape, row) for row in self._init]
        mem = BlockRAM(self._depth, width, registered=self._registered_ports,
                       family=self._family, init=init)
        copy = BlockRAM(copy_depth, width, registered=self._registered_ports,
                        family=self._family, init=init[:copy_depth])
        m.submodules.mem, m.submodules.copy = mem, copy
        m.d.comb += [mem.w.addr.eq(self.w.addr), mem.w.data.eq(Value.cast(self.w.data)),
                     mem.w.en.eq(self.w.en),
                     copy.w.addr.eq(self.w.addr), copy.w.data.eq(Value.cast(self.w.data))]
        if copy_depth < self._depth:
            m.d.comb += copy.w.en.eq(Mux(self.w.addr < copy_depth, self.w.en, 0))
        else:
            m.d.comb += copy.w.en.eq(self.w.en)
        for req, ram in ((self.r0, mem), (self.r1, copy)):
            m.d.comb += [ram.r.addr.eq(req.addr), ram.r.en.eq(req.en),
                         Value.cast(req.data).eq(ram.r.data)]
        return m


class AccumulatorMemory(RowMemory):
    """The accumulators: ``depth`` rows of ``n`` accumulator-format words.

    A read port ``r0`` (the matmul engine's additions, the host) and one write port
    ``w``; with ``cfg.chase_matmul`` a second read port ``r1`` for the vector and
    gradient-descent units (a second copy of the block RAM), which the control unit lets
    read rows while the matmul engine writes others. (The matmul engine forwards rows it
    is still writing to its own additions, and the units read a row only after the cycle
    it is written, so reads of a row being written are "don't care" here too.)

    With :meth:`registered_reads` both ports' data arrive two cycles after the request,
    through the block RAMs' output registers on ECP5 (``family``).
    """

    def __init__(self, cfg, depth, *, family=None):
        super().__init__(depth, data.ArrayLayout(cfg.acc.shape, cfg.n),
                         read_ports=2 if cfg.chase_matmul else 1,
                         registered=self.registered_reads(cfg), family=family)

    @staticmethod
    def registered_reads(cfg):
        """Whether the ports' data is registered once more (arriving two cycles after the
        request): where the engines that read the accumulators register the row straight
        from the port anyway and take the port's register instead (the matmul engine's
        old row with ``cfg.registered_requests``, the vector unit's row, the
        gradient-descent unit's row with ``cfg.isolated_multipliers``) and the host
        latches what it reads a cycle later (:meth:`UnifiedBuffer.registered_reads`, which
        includes ``cfg.registered_requests``)."""
        return UnifiedBuffer.registered_reads(cfg) and cfg.isolated_multipliers

    @staticmethod
    def registered_row(m, cfg, port_data, name, *, reset_less=True):
        """A row an engine read from the accumulators in cycle ``t``, registered in
        ``t+1``: the port's own register where it has one, else a register ``name`` of the
        engine's in ``m``."""
        return registered_row(m, AccumulatorMemory.registered_reads(cfg), port_data, name,
                              reset_less=reset_less)


def registered_row(m, registered, port_data, name, *, reset_less=True):
    """``port_data`` (a memory port's data, a row read in cycle ``t``) as a register that
    holds it in ``t+1``: the port's own when ``registered``, else a new register ``name``
    in ``m``."""
    if registered:
        return port_data
    reg = Signal.like(port_data, name=name, reset_less=reset_less)
    m.d.sync += reg.eq(port_data)
    return reg


def _raw_row(shape, row):
    """The bits of an initial row ``row`` of a memory of ``shape``."""
    if isinstance(shape, ShapeCastable):
        return Const.cast(shape.const(row)).value
    return Const(row, Shape.cast(shape)).value


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
    """Connect several write requesters to one memory write port: the address and data
    of the requester whose ``en`` is high (at most one is); the last requester's when none
    is, so that it needs no selection logic of its own."""
    if not requesters:
        m.d.comb += port.en.eq(0)
        return
    addr = requesters[-1].addr
    dat = Value.cast(requesters[-1].data)
    en = requesters[-1].en
    for req in reversed(requesters[:-1]):
        addr = Mux(req.en, req.addr, addr)
        dat = Mux(req.en, Value.cast(req.data), dat)
        en = en | req.en
    m.d.comb += [port.addr.eq(addr), Value.cast(port.data).eq(dat), port.en.eq(en)]


def collision_checker(memories):
    """An async testbench that raises :class:`AssertionError` in the first cycle in which
    a read port of one of ``memories`` (a dict name -> :class:`RowMemory`, elaborated)
    reads the row its write port writes, or in which a memory's shared read port reads
    while it is written."""
    ports = []
    for name, mem in memories.items():
        for i in range(mem.read_ports):
            ports.append((name, i, mem.w, getattr(mem, f"r{i}"), i == mem.shared_port))
    signals = [s for _, _, w, r, _ in ports for s in (w.en, w.addr, r.en, r.addr)]

    async def check(ctx):
        cycle = 0
        async for _, _, *values in ctx.tick().sample(*signals):
            for k, (name, i, _, _, shared) in enumerate(ports):
                w_en, w_addr, r_en, r_addr = values[4 * k:4 * k + 4]
                if w_en and r_en and shared:
                    raise AssertionError(f"{name}: port r{i}, which shares the write port's "
                                         f"address, read row {r_addr} while row {w_addr} is "
                                         f"written (cycle {cycle})")
                if w_en and r_en and w_addr == r_addr:
                    raise AssertionError(f"{name}: row {w_addr} read through port r{i} in "
                                         f"the cycle it is written (cycle {cycle})")
            cycle += 1
    return check
