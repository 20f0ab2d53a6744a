"""The TPU behind a UART host bridge (:class:`SerialTPU`), and on a board's pins
(:class:`BoardTop`)."""

from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from .clocking import BoardClocking, board_pll
from .tpu import TPU
from .uart_bridge import UARTHostBridge

__all__ = ["SerialTPU", "BoardTop"]


class SerialTPU(wiring.Component):
    """:class:`~.tpu.TPU` + :class:`~.uart_bridge.UARTHostBridge`.

    Members: ``rx``, ``tx`` (serial line), ``running``, ``done``, ``error`` (for LEDs).

    ``pipelined`` puts register stages on the serial path (the ECP5 boards; small FPGAs
    leave it off, for their flip-flops and logic):

    * the command words and the response words each pass a register stage between the
      bridge and the TPU (valid, payload and ready from registers: one word every other
      cycle, as the bridge forwards them, far more than the serial line carries), so that
      the bridge's frame buffer (a block RAM read without an output register) and the host
      interface's header decode, and the host interface's read multiplexer and the
      bridge's frame arithmetic, are not one path each;
    * the bridge registers a frame's expected length (``registered_checks`` of
      :class:`~.uart_bridge.FrameReceiver`).

    Each was the worst path of the ULX3S build before it.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    running: Out(1)
    done: Out(1)
    error: Out(1)

    def __init__(self, cfg, *, divisor, max_words=256, timeout=None, pipelined=False):
        self._cfg = cfg
        self.bridge_options = dict(divisor=divisor, max_words=max_words, timeout=timeout,
                                   registered_checks=pipelined)
        self._pipelined = pipelined
        super().__init__()

    @staticmethod
    def _register_stage(m, name, source, sink):
        """Connects stream ``source`` to ``sink`` through a one-word register."""
        full = Signal(name=f"{name}_full")
        payload = Signal.like(sink.payload, name=f"{name}_payload")
        m.d.comb += [source.ready.eq(~full), sink.valid.eq(full), sink.payload.eq(payload)]
        with m.If(source.valid & ~full):
            m.d.sync += [full.eq(1), payload.eq(source.payload)]
        with m.If(full & sink.ready):
            m.d.sync += full.eq(0)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tpu = tpu = TPU(self._cfg)
        m.submodules.bridge = bridge = UARTHostBridge(self._cfg, **self.bridge_options)
        if self._pipelined:
            self._register_stage(m, "cmd_stage", bridge.cmd, tpu.host_cmd)
            self._register_stage(m, "resp_stage", tpu.host_resp, bridge.resp)
        else:
            wiring.connect(m, bridge.cmd, tpu.host_cmd)
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
        # The PLL settings first: a clock the PLL cannot make fails before any logic is built.
        pll = board_pll(platform, board.clock_hz)
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.submodules.clocking = clocking = BoardClocking(
            platform, pll, reset_button=board.reset_button)
        self.clock_hz = clocking.frequency
        # The register stages of the serial path, for all but the small iCE40 devices.
        m.submodules.tpu = tpu = SerialTPU(board.cfg,
                                           divisor=self.uart_divisor(clocking.frequency),
                                           pipelined=platform.family.lower() != "ice40")

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
