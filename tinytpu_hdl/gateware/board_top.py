"""The TPU behind a UART host bridge: what a board carries (pins added per board)."""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .tpu import TPU
from .uart_bridge import UARTHostBridge

__all__ = ["SerialTPU"]


class SerialTPU(wiring.Component):
    """:class:`~.tpu.TPU` + :class:`~.uart_bridge.UARTHostBridge`.

    Members: ``rx``, ``tx`` (serial line), ``running``, ``done``, ``error`` (for LEDs).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    running: Out(1)
    done: Out(1)
    error: Out(1)

    def __init__(self, cfg, *, divisor, max_words=256, timeout=None):
        self._cfg = cfg
        self.bridge_options = dict(divisor=divisor, max_words=max_words, timeout=timeout)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.tpu = tpu = TPU(self._cfg)
        m.submodules.bridge = bridge = UARTHostBridge(self._cfg, **self.bridge_options)
        wiring.connect(m, bridge.cmd, tpu.host_cmd)
        wiring.connect(m, tpu.host_resp, bridge.resp)
        m.d.comb += [bridge.rx.eq(self.rx), self.tx.eq(bridge.tx), self.running.eq(tpu.running),
                     self.done.eq(tpu.done), self.error.eq(tpu.error)]
        return m
