"""A transport over a simulated serial line to the simulated :class:`SerialTPU`: the same
frames a board receives, bit by bit (used to test the UART backend without a board)."""

from collections import deque

from amaranth.sim import Simulator

from ..gateware.board_top import SerialTPU
from .uart import FramedLink

__all__ = ["SimulatedSerialTransport"]


class SimulatedSerialTransport(FramedLink):
    """Drives ``rx`` and samples ``tx`` of a simulated :class:`SerialTPU` at ``divisor``
    clock cycles per bit."""

    def __init__(self, cfg, *, divisor=4, max_words=64, timeout=None, pipelined=False):
        self.divisor = divisor
        self.top = SerialTPU(cfg, divisor=divisor, max_words=max_words, timeout=timeout,
                             pipelined=pipelined)
        self._out_bits = deque()     # line levels to drive, one per cycle
        self._received = bytearray()
        self.cycle = 0
        self._sim = Simulator(self.top)
        self._sim.add_clock(1e-8)
        self._sim.add_testbench(self._line, background=True)
        super().__init__(cfg, max_words=max_words)

    async def _line(self, ctx):
        top, div = self.top, self.divisor
        # Receiver of the device's tx line, sampling mid-bit.
        state, count, bits, value = "idle", 0, 0, 0
        while True:
            ctx.set(top.rx, self._out_bits.popleft() if self._out_bits else 1)
            _, _, level = await ctx.tick().sample(top.tx)
            self.cycle += 1
            if state == "idle":
                if not level:
                    state, count = "start", div // 2
            elif count > 1:
                count -= 1
            elif state == "start":
                state, count, bits, value = "data", div, 0, 0
            elif state == "data":
                value |= level << bits
                bits += 1
                count = div
                if bits == 8:
                    state = "stop"
            else:
                self._received.append(value)
                state = "idle"

    def write_bytes(self, data):
        for byte in data:
            bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
            for b in bits:
                self._out_bits.extend([b] * self.divisor)

    def read_bytes(self, n, timeout_cycles=5_000_000):
        start = self.cycle
        while len(self._received) < n:
            self._sim.advance()
            if self.cycle - start > timeout_cycles:
                raise TimeoutError("no answer on the simulated serial line")
        out = bytes(self._received[:n])
        del self._received[:n]
        return out

    def discard_input(self):
        """Forget the bytes received so far (answers to frames nobody waits for)."""
        self._received.clear()

    def idle(self, cycles):
        target = self.cycle + cycles
        while self.cycle < target:
            self._sim.advance()
