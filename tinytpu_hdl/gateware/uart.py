"""8N1 UART receiver and transmitter."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .signatures import valid_stream

__all__ = ["UARTReceiver", "UARTTransmitter"]


def _check_divisor(divisor):
    if not isinstance(divisor, int) or divisor < 4:
        raise ValueError(f"UART divisor (clock cycles per bit) must be an integer >= 4, "
                         f"not {divisor!r}")


class UARTReceiver(wiring.Component):
    """Receives 8N1 bytes on ``rx``; ``divisor`` clock cycles per bit.

    Members
    -------
    rx : In(1)          -- the serial line (idle high)
    data : Out(valid_stream(8))
        One byte, ``valid`` for one cycle, in the cycle after its stop bit was sampled.
    frame_error : Out(1)
        One-cycle pulse instead, when the stop bit was low.

    Timing: the start bit is confirmed half a bit after the falling edge; each bit is
    sampled in its middle. The line is synchronized through two flip-flops first.
    """

    rx: In(1, init=1)
    data: Out(valid_stream(8))
    frame_error: Out(1)

    def __init__(self, divisor):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        sync1 = Signal(init=1)
        line = Signal(init=1)
        m.d.sync += [sync1.eq(self.rx), line.eq(sync1)]
        timer = Signal(range(div + 1))
        bit = Signal(range(9))
        shift = Signal(8)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(div // 2)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):
                    m.next = "IDLE"                      # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(div - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shift.eq(Cat(shift[1:], line)),
                                 timer.eq(div - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(line):
                        m.d.comb += [self.data.valid.eq(1)]
                    with m.Else():
                        m.d.comb += self.frame_error.eq(1)
                    m.next = "IDLE"
        m.d.comb += self.data.payload.eq(shift)
        return m


class UARTTransmitter(wiring.Component):
    """Sends the bytes of ``data`` as 8N1 on ``tx``; ``divisor`` clock cycles per bit.

    Members
    -------
    data : In(stream.Signature(8))   -- a byte is taken when ``valid`` and ``ready``
    tx : Out(1)                      -- the serial line (idle high)
    """

    data: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        timer = Signal(range(div))
        bits = Signal(range(11))
        frame = Signal(10, init=0x3FF)
        m.d.comb += [self.tx.eq(frame[0]), self.data.ready.eq(bits == 0)]
        with m.If(bits == 0):
            with m.If(self.data.valid):
                m.d.sync += [frame.eq((1 << 9) | (self.data.payload << 1)), bits.eq(10),
                             timer.eq(div - 1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [frame.eq((1 << 9) | (frame >> 1)), bits.eq(bits - 1), timer.eq(div - 1)]
        return m
