"""Host interface: executes host-protocol packets against the memories and the control unit."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.utils import ceil_log2
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..host_protocol import Command, Space, Status, item_words, space_depth
from ..isa import INSTRUCTION_BITS
from .control import CSR
from .memory import read_request, write_request

__all__ = ["HostInterface"]


class HostInterface(wiring.Component):
    """Decodes the command stream of :mod:`tinytpu_hdl.host_protocol` and answers on the
    response stream.

    Memory reads and writes are refused with status ``BUSY`` while a program
    runs, but for writes to the unified buffer: those are taken (for rows the program
    does not use: the host's next chunk of data while the program works on the last),
    each row in a cycle in which no engine uses the buffer's write port or the read port
    that shares its address (``ub_busy``). With ``buffered_ub_write`` each row is handed
    to a register and written from it in such a cycle (the next command waits until the
    last row is written). With ``read_wait`` an item read is latched a cycle later (for a
    buffer whose ports register their output, :meth:`.UnifiedBuffer.registered_reads`).
    A refused write also makes the control unit stop the program with ``HOST_CONFLICT``. The control and status registers can be
    read at any time. A write whose range does not fit is answered ``RANGE``
    and its data words are consumed and dropped, so nothing is written.

    Members
    -------
    cmd : In(stream.Signature(32))
    resp : Out(stream.Signature(32))
    ub_rd, ub_wr, acc_rd, acc_wr, imem_rd, imem_wr : memory requesters
    csr_addr, csr_rdata, csr_wdata, csr_we : control-unit register access (reads answer
                                             in the next cycle, like the memories)
    start, stop, clear, host_conflict : Out(1)  -- one-cycle pulses to the control unit
                                       (stop and host_conflict registered: they reach a
                                       running program's issue logic)
    running : In(1)
    ub_busy : In(1)                    -- an engine writes the unified buffer, or reads it
                                          through the port that shares the write address
    faulted : In(1)                    -- the control unit is in its error state (START is
                                          answered REFUSED)

    Timing
    ------
    Accepts one command word per cycle (an instruction word is written to the
    instruction memory as it arrives, or in the cycle after with ``read_register``;
    the items of the other spaces are written once their last word has arrived). A read answers each word of an item
    after two cycles of memory (or register) access (three with ``read_wait``), as
    ``resp.ready`` allows.
    """

    def __init__(self, cfg, *, read_register=True, buffered_ub_write=False, read_wait=False):
        self._cfg = cfg
        self._read_register = read_register
        self._buffered_ub_write = buffered_ub_write
        self._read_wait = read_wait
        ub_row = data.ArrayLayout(cfg.data.shape, cfg.n)
        acc_row = data.ArrayLayout(cfg.acc.shape, cfg.n)
        super().__init__({
            "cmd": In(stream.Signature(32)),
            "resp": Out(stream.Signature(32)),
            "ub_rd": Out(read_request(cfg.ub_depth, ub_row)),
            "ub_wr": Out(write_request(cfg.ub_depth, ub_row)),
            "acc_rd": Out(read_request(cfg.acc_depth, acc_row)),
            "acc_wr": Out(write_request(cfg.acc_depth, acc_row)),
            "imem_rd": Out(read_request(cfg.imem_depth, INSTRUCTION_BITS)),
            "imem_wr": Out(write_request(cfg.imem_depth, INSTRUCTION_BITS, INSTRUCTION_BITS // 32)),
            "csr_addr": Out(6), "csr_rdata": In(32), "csr_wdata": Out(32), "csr_we": Out(1),
            "start": Out(1), "stop": Out(1), "clear": Out(1), "host_conflict": Out(1),
            "running": In(1),
            "ub_busy": In(1),
            "faulted": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        spaces = list(Space)
        max_words = max(item_words(cfg, s) for s in spaces)

        command = Signal(8)
        is_start = Signal()          # command == START, registered with it
        space = Signal(8)
        is_space = {s: Signal(name=f"is_{s.name.lower()}") for s in spaces}  # space == s
        last_word = Signal(range(max_words))   # index of an item's last word in ``space``
        count = Signal(16)
        addr = Signal(16)            # the address word's low half
        status = Signal(8)
        remaining = Signal(16)       # items left
        word_index = Signal(range(max_words + 1))
        # Registered beside them, so that the instruction memory's per-word write enables
        # follow registers through one gate: no items are left (``remaining == 0``); the
        # word written next, one-hot; the command is an accepted write of instructions.
        no_items = Signal()
        word_onehot = Signal(INSTRUCTION_BITS // 32)
        imem_write = Signal()
        # Written items are collected in a shift register: data words shift in at the top,
        # so an item of w words ends up in its top w words. Instructions are written a
        # word at a time instead (the instruction memory has a write enable per word), so
        # the register is as long as the longest item of the other spaces.
        buf_words = max(item_words(cfg, s) for s in spaces if s != Space.IMEM)
        buf = Signal(32 * buf_words)
        shift = Signal()
        with m.If(shift):
            m.d.sync += buf.eq(Cat(buf[32:], self.cmd.payload))

        def item(space):
            """The item written to ``space``: the top ``item_words`` words of ``buf``."""
            return buf[32 * (buf_words - item_words(cfg, space)):]

        # Read items are sent a word at a time, from the memory's (or the CSR's) output,
        # which holds while the item is sent. With ``read_register`` each space's item is
        # registered by itself (``latch``, no multiplexer between a block RAM's output and
        # its register) and the words are selected from the registers; without it,
        # ``rword`` latches word ``latch_index`` straight from the output (fewer
        # flip-flops, a longer path).
        rword = Signal(32)
        latch = Signal()
        latch_index = Signal.like(word_index)
        m.d.comb += latch_index.eq(word_index)
        sources = ((self.ub_rd.data, Space.UB), (self.acc_rd.data, Space.ACC),
                   (self.imem_rd.data, Space.IMEM), (self.csr_rdata, Space.CSR))
        if self._read_register:
            item_regs = {}
            for source, target in sources:
                item_regs[target] = Signal(32 * item_words(cfg, target), reset_less=True,
                                           name=f"read_{target.name.lower()}")
                with m.If(latch & is_space[target]):
                    m.d.sync += item_regs[target].eq(source)
            with m.Switch(space):
                for target, item_reg in item_regs.items():
                    with m.Case(target):
                        words = item_words(cfg, target)
                        index = word_index[:max(1, ceil_log2(words))]
                        m.d.comb += rword.eq(item_reg.word_select(index, 32) if words > 1
                                             else item_reg)
        else:
            with m.If(latch):
                with m.Switch(space):
                    for source, target in sources:
                        with m.Case(target):
                            words = item_words(cfg, target)
                            source = Value.cast(source)
                            padded = Cat(source, Const(0, 32 * words - len(source)))
                            index = latch_index[:max(1, ceil_log2(words))]
                            m.d.sync += rword.eq(padded.word_select(index, 32) if words > 1
                                                 else padded)

        # The index of an item's last word, and which space the command names, registered
        # with the header (from the header word as it arrives), so that the word counting
        # and the read latch enables need no arithmetic on ``space``.
        header_last_word = Signal(range(max_words))
        with m.Switch(self.cmd.payload[8:16]):
            for s in spaces:
                with m.Case(s):
                    m.d.comb += header_last_word.eq(item_words(cfg, s) - 1)
        known_space = space < len(spaces)
        # Whether the range fits the space, registered with the address (``fits``). With
        # ``read_register`` (the registers for speed), the room the count leaves (depth -
        # count, and whether the count fits at all) is computed from the header word as it
        # arrives and registered with it, so that each of the two cycles has one carry
        # chain; without, the address and count are added and compared with the space's
        # depth in one cycle (fewer logic cells).
        fits = Signal()
        header_regs = []
        if self._read_register:
            header_depth = Signal(17)
            with m.Switch(self.cmd.payload[8:16]):
                for s in spaces:
                    with m.Case(s):
                        m.d.comb += header_depth.eq(space_depth(cfg, s))
            room = Signal(17)
            count_fits = Signal()
            header_regs = [room.eq(header_depth - self.cmd.payload[16:]),
                           count_fits.eq(self.cmd.payload[16:] <= header_depth)]
            address_fits = ((self.cmd.payload[16:] == 0) & count_fits &
                            (self.cmd.payload[:16] <= room))
        else:
            depth_of = Signal(17)
            with m.Switch(space):
                for s in spaces:
                    with m.Case(s):
                        m.d.comb += depth_of.eq(space_depth(cfg, s))
            address_fits = ((self.cmd.payload[16:] == 0) &
                            ((self.cmd.payload[:16] + count) <= depth_of))

        item_addr = Signal(16)

        # Write requests: only ``en`` says whether the host writes (see .memory).
        for port, target in ((self.ub_wr, Space.UB), (self.acc_wr, Space.ACC)):
            if not (self._buffered_ub_write and target == Space.UB):
                m.d.comb += [port.addr.eq(item_addr), Value.cast(port.data).eq(item(target))]
        # With ``buffered_ub_write`` a buffer row is handed to a register of its own
        # (``ub_pending``), written from there in the first cycle in which ``ub_busy`` is
        # low, so that the write enable is an AND of two registers.
        if self._buffered_ub_write:
            ub_pending = Signal()
            ub_pending_addr = Signal.like(self.ub_wr.addr)
            ub_pending_row = Signal(len(item(Space.UB)), reset_less=True)
            ub_write = ub_pending & ~self.ub_busy
            m.d.comb += [self.ub_wr.addr.eq(ub_pending_addr),
                         Value.cast(self.ub_wr.data).eq(ub_pending_row),
                         self.ub_wr.en.eq(ub_write)]
            with m.If(ub_write):
                m.d.sync += ub_pending.eq(0)
        # An instruction word is written as it arrives; with ``read_register`` (the
        # registers for speed) the write is registered and lands a cycle later, so that
        # the state decode and the command stream's valid do not reach the instruction
        # memory's write enables, which lie far away, in the same cycle.
        imem_en = Signal(INSTRUCTION_BITS // 32)
        if self._read_register:
            imem_en_q = Signal.like(imem_en)
            imem_addr_q = Signal.like(item_addr)
            imem_word_q = Signal(32, reset_less=True)
            m.d.sync += [imem_en_q.eq(imem_en), imem_addr_q.eq(item_addr),
                         imem_word_q.eq(self.cmd.payload)]
            imem_wr_en, imem_wr_addr, imem_wr_word = imem_en_q, imem_addr_q, imem_word_q
        else:
            imem_wr_en, imem_wr_addr, imem_wr_word = imem_en, item_addr, self.cmd.payload
        m.d.comb += [self.imem_wr.addr.eq(imem_wr_addr), self.imem_wr.en.eq(imem_wr_en),
                     self.imem_wr.data.eq(Cat(*[imem_wr_word] * (INSTRUCTION_BITS // 32)))]
        m.d.comb += self.resp.payload.eq(0)

        # Memory read requests (in state READ_ADDR) come from registers set on the way
        # there, one per space, so that only an AND lies between them and the read ports'
        # wired OR (see .memory.share_read).
        to_read_addr = Signal()
        read_ports = ((self.ub_rd, Space.UB), (self.acc_rd, Space.ACC),
                      (self.imem_rd, Space.IMEM))
        read_request = {target: Signal(name=f"read_request_{target.name.lower()}")
                        for _, target in read_ports}
        for port, target in read_ports:
            m.d.sync += read_request[target].eq(to_read_addr & is_space[target])
            m.d.comb += [port.addr.eq(Mux(read_request[target], item_addr, 0)),
                         port.en.eq(read_request[target])]

        m.d.sync += [self.stop.eq(0), self.host_conflict.eq(0)]
        with m.FSM(init="HEADER"):
            with m.State("HEADER"):
                # (A command waits until the last buffer row handed over is written.)
                if self._buffered_ub_write:
                    m.d.comb += self.cmd.ready.eq(~ub_pending)
                    header = self.cmd.valid & ~ub_pending
                else:
                    m.d.comb += self.cmd.ready.eq(1)
                    header = self.cmd.valid
                with m.If(header):
                    m.d.sync += [command.eq(self.cmd.payload[:8]), space.eq(self.cmd.payload[8:16]),
                                 count.eq(self.cmd.payload[16:]),
                                 last_word.eq(header_last_word),
                                 *[flag.eq(self.cmd.payload[8:16] == s)
                                   for s, flag in is_space.items()],
                                 *header_regs,
                                 is_start.eq(self.cmd.payload[:8] == Command.START)]
                    m.next = "ADDRESS"
            with m.State("ADDRESS"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [addr.eq(self.cmd.payload[:16]), fits.eq(address_fits)]
                    m.next = "DECIDE"
            with m.State("DECIDE"):
                m.d.sync += [remaining.eq(count), word_index.eq(0), item_addr.eq(addr),
                             no_items.eq(count == 0), word_onehot.eq(1),
                             imem_write.eq(is_space[Space.IMEM] & known_space &
                                           ~self.running & fits)]
                is_csr = is_space[Space.CSR]
                with m.Switch(command):
                    with m.Case(Command.WRITE):
                        with m.If(~known_space):
                            m.d.sync += status.eq(Status.BAD_COMMAND)
                        with m.Elif(self.running & ~is_space[Space.UB]):
                            m.d.sync += status.eq(Status.BUSY)
                            m.d.sync += self.host_conflict.eq(1)
                        with m.Elif(~fits):
                            m.d.sync += status.eq(Status.RANGE)
                        with m.Else():
                            m.d.sync += status.eq(Status.OK)
                        # Data of an unknown space cannot be delimited: answer at once.
                        m.next = "WRITE_DATA"
                        with m.If(~known_space):
                            m.next = "RESPOND"
                    with m.Case(Command.READ):
                        with m.If(~known_space):
                            m.d.sync += status.eq(Status.BAD_COMMAND)
                        with m.Elif(self.running & ~is_csr):
                            m.d.sync += status.eq(Status.BUSY)
                        with m.Elif(~fits):
                            m.d.sync += status.eq(Status.RANGE)
                        with m.Else():
                            m.d.sync += status.eq(Status.OK)
                        m.next = "RESPOND"
                    with m.Case(Command.START):
                        with m.If(self.running):
                            m.d.sync += status.eq(Status.BUSY)
                        with m.Else():
                            m.d.comb += self.csr_we.eq(1)
                            m.d.sync += status.eq(Status.OK)
                        m.next = "START"
                    with m.Case(Command.STOP):
                        m.d.sync += self.stop.eq(1)
                        m.d.sync += status.eq(Status.OK)
                        m.next = "RESPOND"
                    with m.Case(Command.CLEAR):
                        with m.If(self.running):
                            m.d.sync += status.eq(Status.BUSY)
                        with m.Else():
                            m.d.comb += self.clear.eq(1)
                            m.d.sync += status.eq(Status.OK)
                        m.next = "RESPOND"
                    with m.Default():
                        m.d.sync += status.eq(Status.BAD_COMMAND)
                        m.next = "RESPOND"
            with m.State("START"):
                # The control unit refuses to start from the error state.
                with m.If(status == Status.OK):
                    with m.If(self.faulted):
                        m.d.sync += status.eq(Status.REFUSED)
                    with m.Else():
                        m.d.comb += self.start.eq(1)
                m.next = "RESPOND"
            with m.State("WRITE_DATA"):
                with m.If(no_items):
                    m.next = "RESPOND"
                with m.Else():
                    m.d.comb += self.cmd.ready.eq(1)
                    with m.If(self.cmd.valid):
                        m.d.comb += shift.eq(1)
                        with m.If(imem_write):
                            m.d.comb += imem_en.eq(word_onehot)
                        with m.If(word_index == last_word):
                            m.d.sync += [word_index.eq(0), word_onehot.eq(1)]
                            m.next = "WRITE_ITEM"
                        with m.Else():
                            m.d.sync += [word_index.eq(word_index + 1),
                                         word_onehot.eq(word_onehot << 1)]
            with m.State("WRITE_ITEM"):
                # A buffer row waits while an engine uses the buffer's shared port (or
                # while the row before is still to be written).
                busy = ub_pending if self._buffered_ub_write else self.ub_busy
                wait = is_space[Space.UB] & busy & (status == Status.OK)
                with m.If(~wait):
                    with m.If(status == Status.OK):
                        with m.Switch(space):
                            with m.Case(Space.UB):
                                if self._buffered_ub_write:
                                    m.d.sync += [ub_pending.eq(1),
                                                 ub_pending_addr.eq(item_addr),
                                                 ub_pending_row.eq(item(Space.UB))]
                                else:
                                    m.d.comb += self.ub_wr.en.eq(1)
                            with m.Case(Space.ACC):
                                m.d.comb += self.acc_wr.en.eq(1)
                            with m.Case(Space.CSR):
                                m.d.comb += self.csr_we.eq(1)
                    m.d.sync += [remaining.eq(remaining - 1), item_addr.eq(item_addr + 1),
                                 no_items.eq(remaining == 1)]
                    m.next = "WRITE_DATA"
            with m.State("RESPOND"):
                m.d.comb += [
                    self.resp.valid.eq(1),
                    self.resp.payload.eq(command | (status << 8) |
                                         (Mux(status == Status.OK, count, 0) << 16)),
                ]
                with m.If(self.resp.ready):
                    with m.If((command == Command.READ) & (status == Status.OK) & (count != 0)):
                        m.d.comb += to_read_addr.eq(1)
                        m.next = "READ_ADDR"
                    with m.Else():
                        m.next = "HEADER"
            with m.State("READ_ADDR"):
                # (The read request is made from ``read_request``, set on the way here.)
                m.next = "READ_WAIT" if self._read_wait else "READ_LATCH"
            if self._read_wait:
                with m.State("READ_WAIT"):
                    # (A memory whose port registers its output answers a cycle later.)
                    m.next = "READ_LATCH"
            with m.State("READ_LATCH"):
                m.d.comb += latch.eq(1)
                m.next = "READ_SEND"
            with m.State("READ_SEND"):
                m.d.comb += [self.resp.valid.eq(1), self.resp.payload.eq(rword)]
                with m.If(self.resp.ready):
                    with m.If(word_index == last_word):
                        m.d.sync += [remaining.eq(remaining - 1), item_addr.eq(item_addr + 1),
                                     word_index.eq(0)]
                        m.next = "READ_ADDR"
                        m.d.comb += to_read_addr.eq(1)
                        with m.If(remaining == 1):
                            m.d.comb += to_read_addr.eq(0)
                            m.next = "HEADER"
                    with m.Else():
                        # The memory's output holds: latch the item's next word.
                        m.d.sync += word_index.eq(word_index + 1)
                        m.d.comb += [latch.eq(1), latch_index.eq(word_index + 1)]

        # The CSR address and write data come from registers only (the address of the
        # item being read or written, or START_PC for a START), so that the control unit's
        # register read multiplexer follows no logic of this state machine; ``csr_we``
        # says when they count.
        m.d.comb += [self.csr_addr.eq(Mux(is_start, CSR.START_PC, item_addr)),
                     self.csr_wdata.eq(Mux(is_start, addr, item(Space.CSR)[:32]))]
        return m
