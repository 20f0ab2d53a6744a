"""UART host bridge: serial frames with a length and a CRC in, host-protocol words out.

A whole command frame is received into a buffer and its CRC checked before any word reaches
the TPU, so a corrupted or truncated frame changes nothing: it is answered with an error
frame. Responses are framed on the way out. Wire format: ``docs/host-protocol.md``.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..host_protocol import (
    BRIDGE_ERROR, FRAME_TO_DEVICE, FRAME_TO_HOST, BridgeError, Command, Space, Status,
    item_words,
)
from ..numeric import hdl_mul_const
from .signatures import valid_stream
from .uart import UARTReceiver, UARTTransmitter

__all__ = ["UARTHostBridge", "FrameReceiver", "hdl_crc16_byte"]


def _crc16_byte_taps():
    """For each bit of the updated CRC, the CRC bits (0..15) and byte bits (16..23) whose
    XOR it is: the byte-wise CRC-16/CCITT-FALSE update is linear over GF(2)."""
    bits = [frozenset([i]) for i in range(16)]                # the CRC before the byte
    for i in range(8):
        bits[8 + i] = bits[8 + i] ^ frozenset([16 + i])       # crc ^= byte << 8
    for _ in range(8):
        top = bits[15]
        shifted = [frozenset()] + bits[:15]
        bits = [b ^ top if (0x1021 >> k) & 1 else b for k, b in enumerate(shifted)]
    return [sorted(b) for b in bits]


_CRC16_TAPS = _crc16_byte_taps()


def hdl_crc16_byte(crc, byte):
    """Amaranth expression: CRC-16/CCITT-FALSE ``crc`` updated with one ``byte``, as one
    XOR tree per bit (a bit-serial loop would nest the expression 3**8 deep)."""
    inputs = Cat(crc[:16], byte[:8])
    out = []
    for taps in _CRC16_TAPS:
        value = Const(0, 1)
        for t in taps:
            value = value ^ inputs[t]
        out.append(value)
    return Cat(*out)


class FrameReceiver(wiring.Component):
    """Receives command frames from a byte stream and forwards their words, after the CRC
    has been checked, on ``cmd``.

    Members
    -------
    bytes : In(valid_stream(8))   -- received bytes
    framing_error : In(1)         -- a byte arrived without its stop bit
    cmd : Out(stream.Signature(32))
    error : Out(8)                -- a :class:`BridgeError` waiting to be reported (0: none)
    error_ack : In(1)             -- the error has been taken
    header : Out(32)              -- the first word of the last forwarded command
    awaiting_reply : Out(1)       -- forwarded; waiting until ``reply_done``
    reply_done : In(1)
    listening : Out(1)            -- received bytes are taken (not while forwarding or
                                     waiting for the reply: those bytes are dropped)

    A frame is buffered whole (``max_words`` words) and dropped, with an error, if its
    length is 0 or too large, its CRC does not match, a byte has a framing error, no
    byte arrives for ``timeout`` cycles in the middle of it, or its words are not exactly
    one command packet (:func:`~tinytpu_hdl.host_protocol.packet_words`: a shorter one would
    leave the TPU waiting for the rest, a longer one would start a command of its tail).
    So every frame forwarded is answered by the TPU.

    With ``registered_checks`` the packet's expected length is a register, loaded in the
    cycle after the frame's first word (its product of the item count and the item's
    words and the sum with the header words then make no path with the length compare
    and the state machine; the CRC's two bytes come after that word, so the check's
    result does not change). Small FPGAs leave it off (its flip-flops).
    """

    def __init__(self, cfg, *, max_words, timeout, registered_checks=False):
        self._cfg = cfg
        self._max_words = max_words
        self._timeout = timeout
        self._registered_checks = registered_checks
        super().__init__({
            "bytes": In(valid_stream(8)), "framing_error": In(1),
            "cmd": Out(stream.Signature(32)),
            "error": Out(8), "error_ack": In(1), "header": Out(32),
            "awaiting_reply": Out(1), "reply_done": In(1), "listening": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.buf = buf = Memory(shape=32, depth=self._max_words, init=[])
        wp = buf.write_port()
        rp = buf.read_port(domain="sync")
        byte = self.bytes.payload
        got = self.bytes.valid
        length = Signal(16)
        count = Signal(16)                 # words received / forwarded
        byte_index = Signal(2)
        word = Signal(32)
        crc = Signal(16, init=0xFFFF)
        crc_rx = Signal(8)
        idle_timer = Signal(range(self._timeout + 1))
        error = self.error
        first_word = self.header
        reply_done = self.reply_done
        with m.If(self.error_ack):
            m.d.sync += error.eq(0)
        urx_frame_error = self.framing_error


        # The words the packet in the frame must have, from its first word (registered in
        # the frame's data bytes, long before the CRC's last byte).
        head = Signal(32)
        cfg = self._cfg
        expected = Signal(20)
        data_words = Signal(20)
        with m.Switch(head[8:16]):
            for s in Space:
                with m.Case(s):
                    m.d.comb += data_words.eq(hdl_mul_const(head[16:], item_words(cfg, s)))
        domain = m.d.sync if self._registered_checks else m.d.comb
        with m.If((head[:8] == Command.WRITE) & (head[8:16] < len(Space))):
            domain += expected.eq(2 + data_words)
        with m.Else():
            domain += expected.eq(2)

        # --- receive -------------------------------------------------------------------
        in_frame = Signal()
        expired = idle_timer == self._timeout
        with m.If(got | ~in_frame):
            m.d.sync += idle_timer.eq(0)
        with m.Elif(~expired):
            m.d.sync += idle_timer.eq(idle_timer + 1)

        def guard():
            """Inside a frame: a framing error or a silence drops it."""
            m.d.comb += in_frame.eq(1)
            with m.If(urx_frame_error):
                m.d.sync += error.eq(BridgeError.FRAMING)
                m.next = "SYNC"
            with m.Elif(expired):
                m.d.sync += error.eq(BridgeError.TIMEOUT)
                m.next = "SYNC"

        with m.FSM(name="rx_fsm") as rx_fsm:
            with m.State("SYNC"):
                m.d.sync += [crc.eq(0xFFFF), count.eq(0), byte_index.eq(0)]
                with m.If(got & (byte == FRAME_TO_DEVICE)):
                    m.next = "LEN0"
            with m.State("LEN0"):
                guard()
                with m.If(got):
                    m.d.sync += [length[:8].eq(byte), crc.eq(hdl_crc16_byte(crc, byte))]
                    m.next = "LEN1"
            with m.State("LEN1"):
                guard()
                with m.If(got):
                    total = Cat(length[:8], byte)
                    m.d.sync += [length[8:].eq(byte), crc.eq(hdl_crc16_byte(crc, byte))]
                    with m.If((total == 0) | (total > self._max_words)):
                        m.d.sync += error.eq(BridgeError.LENGTH)
                        m.next = "SYNC"
                    with m.Else():
                        m.next = "DATA"
            with m.State("DATA"):
                guard()
                with m.If(got):
                    m.d.sync += [word.eq((word >> 8) | (byte << 24)),
                                 crc.eq(hdl_crc16_byte(crc, byte)), byte_index.eq(byte_index + 1)]
                    with m.If(byte_index == 3):
                        m.d.comb += [wp.addr.eq(count), wp.data.eq((word >> 8) | (byte << 24)),
                                     wp.en.eq(1)]
                        with m.If(count == 0):
                            m.d.sync += head.eq((word >> 8) | (byte << 24))
                        m.d.sync += count.eq(count + 1)
                        with m.If(count == length - 1):
                            m.next = "CRC0"
            with m.State("CRC0"):
                guard()
                with m.If(got):
                    m.d.sync += crc_rx.eq(byte)
                    m.next = "CRC1"
            with m.State("CRC1"):
                guard()
                with m.If(got):
                    with m.If((crc[:8] != crc_rx) | (crc[8:] != byte)):
                        m.d.sync += error.eq(BridgeError.CRC)
                        m.next = "SYNC"
                    with m.Elif(length != expected):
                        m.d.sync += error.eq(BridgeError.PACKET)
                        m.next = "SYNC"
                    with m.Else():
                        m.d.sync += count.eq(0)
                        m.next = "FORWARD_ADDR"
            with m.State("FORWARD_ADDR"):
                m.d.comb += [rp.addr.eq(count), rp.en.eq(1)]
                m.next = "FORWARD"
            with m.State("FORWARD"):
                m.d.comb += [self.cmd.valid.eq(1), self.cmd.payload.eq(rp.data)]
                with m.If(self.cmd.ready):
                    with m.If(count == 0):
                        m.d.sync += first_word.eq(rp.data)
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == length - 1):
                        m.next = "REPLY"
                    with m.Else():
                        m.next = "FORWARD_ADDR"
            with m.State("REPLY"):
                with m.If(reply_done):     # the response frame has gone out
                    m.next = "SYNC"
        m.d.comb += [
            self.awaiting_reply.eq(rx_fsm.ongoing("REPLY")),
            self.listening.eq(~rx_fsm.ongoing("REPLY") & ~rx_fsm.ongoing("FORWARD") &
                              ~rx_fsm.ongoing("FORWARD_ADDR")),
        ]
        return m


class UARTHostBridge(wiring.Component):
    """Members: ``rx``/``tx`` (the serial line), ``cmd`` (to ``TPU.host_cmd``), ``resp``
    (from ``TPU.host_resp``), ``busy`` (a frame is in progress).

    ``divisor`` is clock cycles per bit; ``max_words`` the largest command frame (the host
    splits larger writes); ``timeout`` the cycles without a byte after which a partial frame
    is dropped and answered with a TIMEOUT error; ``registered_checks`` as for
    :class:`FrameReceiver`.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    cmd: Out(stream.Signature(32))
    resp: In(stream.Signature(32))
    busy: Out(1)

    def __init__(self, cfg, *, divisor, max_words=256, timeout=None, registered_checks=False):
        self._cfg = cfg
        self._divisor = divisor
        self._max_words = max_words
        self._timeout = timeout if timeout is not None else 200 * divisor * 10
        self._registered_checks = registered_checks
        super().__init__()

    @property
    def max_words(self):
        return self._max_words

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        m.submodules.urx = urx = UARTReceiver(self._divisor)
        m.submodules.utx = utx = UARTTransmitter(self._divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        m.submodules.frames = frames = FrameReceiver(
            cfg, max_words=self._max_words, timeout=self._timeout,
            registered_checks=self._registered_checks)
        wiring.connect(m, frames.cmd, wiring.flipped(self.cmd))
        m.d.comb += [frames.bytes.payload.eq(urx.data.payload),
                     frames.bytes.valid.eq(urx.data.valid),
                     frames.framing_error.eq(urx.frame_error)]
        error = frames.error
        first_word = frames.header
        reply_done = frames.reply_done

        # --- transmit ------------------------------------------------------------------
        out_len = Signal(16)
        sent = Signal(16)
        tx_word = Signal(32)
        tx_crc = Signal(16, init=0xFFFF)
        tx_index = Signal(2)
        space = first_word[8:16]
        # Data words of a read answer: the count times the item's words (no multiplier).
        data_words = Signal(16)
        with m.Switch(space):
            for s in Space:
                with m.Case(s):
                    m.d.comb += data_words.eq(hdl_mul_const(self.resp.payload[16:],
                                                            item_words(cfg, s)))

        # One CRC update, of the byte being sent, whichever state sends it.
        tx_crc_next = Signal(16)
        m.d.comb += tx_crc_next.eq(hdl_crc16_byte(tx_crc, utx.data.payload))

        def send(value, next_state, *, crc_update=True):
            m.d.comb += [utx.data.valid.eq(1), utx.data.payload.eq(value)]
            with m.If(utx.data.ready):
                if crc_update:
                    m.d.sync += tx_crc.eq(tx_crc_next)
                m.next = next_state

        with m.FSM(name="tx_fsm"):
            with m.State("IDLE"):
                m.d.sync += [tx_crc.eq(0xFFFF), sent.eq(0), tx_index.eq(0)]
                with m.If(error != 0):
                    m.d.sync += [tx_word.eq(BRIDGE_ERROR | (error << 8)), out_len.eq(1)]
                    m.d.comb += frames.error_ack.eq(1)
                    m.next = "SYNC"
                with m.Elif(self.resp.valid):
                    echo, status = self.resp.payload[:8], self.resp.payload[8:16]
                    is_data = (echo == Command.READ) & (status == Status.OK)
                    m.d.sync += [tx_word.eq(self.resp.payload),
                                 out_len.eq(1 + Mux(is_data, data_words, 0))]
                    m.d.comb += self.resp.ready.eq(1)
                    m.next = "SYNC"
            with m.State("SYNC"):
                send(FRAME_TO_HOST, "LEN0", crc_update=False)
            with m.State("LEN0"):
                send(out_len[:8], "LEN1")
            with m.State("LEN1"):
                send(out_len[8:], "WORD")
            with m.State("WORD"):
                send(tx_word.word_select(tx_index, 8), "WORD")
                with m.If(utx.data.ready):
                    m.d.sync += tx_index.eq(tx_index + 1)
                    with m.If(tx_index == 3):
                        m.d.sync += sent.eq(sent + 1)
                        with m.If(sent == out_len - 1):
                            m.next = "CRC0"
                        with m.Else():
                            m.next = "NEXT"
            with m.State("NEXT"):
                with m.If(self.resp.valid):
                    m.d.comb += self.resp.ready.eq(1)
                    m.d.sync += tx_word.eq(self.resp.payload)
                    m.next = "WORD"
            with m.State("CRC0"):
                send(tx_crc[:8], "CRC1", crc_update=False)
            with m.State("CRC1"):
                send(tx_crc[8:], "DONE", crc_update=False)
            with m.State("DONE"):
                m.d.comb += reply_done.eq(1)
                m.next = "IDLE"

        m.d.comb += self.busy.eq(frames.awaiting_reply)
        return m
