"""The TPU behind a UART host bridge (:class:`SerialTPU`), and on a board's pins
(:class:`BoardTop`)."""

from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from .clocking import BoardClocking
from .tpu import TPU
from .uart_bridge import UARTHostBridge

__all__ = ["SerialTPU", "BoardTop"]


class SerialTPU(wiring.Component):
    """:class:`~.tpu.TPU` + :class:`~.uart_bridge.UARTHostBridge`.

    Members: ``rx``, ``tx`` (serial line), ``running``, ``done``, ``error`` (for LEDs).

    With ``register_responses`` a register stage lies between the TPU's response stream
    and the bridge (valid, payload and ready each from a register; one word every other
    cycle, far more than the serial line carries), so that the host interface's read
    multiplexer and the bridge's frame arithmetic are not one path (the ULX3S's worst
    path without it). Small FPGAs leave it off (its 33 flip-flops and their logic).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    running: Out(1)
    done: Out(1)
    error: Out(1)

    def __init__(self, cfg, *, divisor, max_words=256, timeout=None, register_responses=False):
        self._cfg = cfg
        self.bridge_options = dict(divisor=divisor, max_words=max_words, timeout=timeout)
        self._register_responses = register_responses
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.tpu = tpu = TPU(self._cfg)
        m.submodules.bridge = bridge = UARTHostBridge(self._cfg, **self.bridge_options)
        wiring.connect(m, bridge.cmd, tpu.host_cmd)
        if self._register_responses:
            full = Signal()
            m.d.comb += [tpu.host_resp.ready.eq(~full), bridge.resp.valid.eq(full)]
            with m.If(tpu.host_resp.valid & ~full):
                m.d.sync += [full.eq(1), bridge.resp.payload.eq(tpu.host_resp.payload)]
            with m.If(full & bridge.resp.ready):
                m.d.sync += full.eq(0)
        else:
            wiring.connect(m, tpu.host_resp, bridge.resp)
        m.d.comb += [bridge.rx.eq(self.rx), self.tx.eq(bridge.tx), self.running.eq(tpu.running),
                     self.done.eq(tpu.done), self.error.eq(tpu.error)]
        return m


class BoardTop(Elaboratable):
    """A :class:`SerialTPU` on a board: clock (and PLL), reset button, USB UART, LEDs.

    ``board`` is a :class:`tinytpu_hdl.boards.Board`. The UART divisor comes from the
    clock the PLL actually makes; a baud rate that the clock cannot make within 2 %
    is refused.
    """

    def __init__(self, board):
        self._board = board
        #: The frequency of the TPU's clock in Hz, known once elaborated (after the PLL's
        #: rounding).
        self.clock_hz = None

    @property
    def board(self):
        return self._board

    def uart_divisor(self, clock_hz):
        baud = self._board.baud
        divisor = round(clock_hz / baud)
        if divisor < 4:
            raise ValueError(f"{baud} baud needs at least 4 clock cycles per bit; the "
                             f"{clock_hz / 1e6:g} MHz clock gives {clock_hz / baud:.2f}")
        error = abs(clock_hz / divisor - baud) / baud
        if error > 0.02:
            raise ValueError(f"{baud} baud is {error:.1%} off with a {clock_hz / 1e6:g} MHz "
                             f"clock (at most 2 %)")
        return divisor

    def elaborate(self, platform):
        board = self._board
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.submodules.clocking = clocking = BoardClocking(
            platform, board.clock_hz, reset_button=board.reset_button)
        self.clock_hz = clocking.frequency
        m.submodules.tpu = tpu = SerialTPU(board.cfg,
                                           divisor=self.uart_divisor(clocking.frequency),
                                           register_responses=platform.family.lower() != "ice40")

        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        # (The UART receiver synchronizes the line itself.)
        m.d.comb += [tpu.rx.eq(rx_buf.i), tx_buf.o.eq(tpu.tx)]

        for what in ("running", "done", "error"):
            if what not in board.leds:
                continue
            name, number = board.leds[what]
            led = platform.request(name, number, dir="-")
            m.submodules[f"led_{what}"] = buf = io.Buffer("o", led)
            m.d.comb += buf.o.eq(getattr(tpu, what))
        return m
