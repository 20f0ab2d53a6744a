"""Backend: the TPU gateware in Amaranth's Python simulator, driven through its host stream."""

from collections import deque

from amaranth.sim import Simulator

from ..gateware.memory import collision_checker
from .waveform import gtkw_path, waveform_groups
from ..gateware.tpu import TPU
from ..host_protocol import Command, Space, Status, item_words, parse_header

__all__ = ["PysimTransport"]


class PysimTransport:
    """A transport (see :mod:`.driver`) to a simulated :class:`~tinytpu_hdl.gateware.tpu.TPU`.

    The simulation lives as long as the transport: memories keep their contents between
    commands. ``cycle`` counts simulated clock cycles. With ``check_collisions``, every
    cycle is checked for a read of a row of the unified buffer or the instruction memory
    in the cycle that row is written (which synthesis treats as "don't care", see
    :mod:`tinytpu_hdl.gateware.memory`); one raises :class:`AssertionError`.
    ``ram_output_registers=False`` simulates the TPU without the registers that keep logic
    off block RAM outputs (the control unit's instruction register, the host interface's
    read register), as built for iCE40 boards. ``waveform``: a VCD file of the whole
    simulation, complete after :meth:`close`, and beside it a GTKWave save file (``.gtkw``)
    with the signals grouped by block. ``family`` simulates the gateware as built
    for that FPGA family (:class:`~tinytpu_hdl.gateware.tpu.TPU`); ECP5's multiplier
    block instances cannot be simulated here (see ``tests/test_multiplier.py``).
    """

    def __init__(self, cfg, *, waveform=None, check_collisions=False, ram_output_registers=None,
                 family=None):
        self.cfg = cfg
        self.tpu = TPU(cfg, family=family, ram_output_registers=ram_output_registers)
        self.cycle = 0
        self._tx = deque()
        self._rx = []
        self._idle_until = 0
        self._sim = Simulator(self.tpu)
        self._sim.add_clock(1e-8)
        self._sim.add_testbench(self._serve, background=True)
        if check_collisions:
            self._sim.add_testbench(collision_checker(self.tpu.checked_memories),
                                    background=True)
        self._vcd = None
        if waveform:
            waveform = str(waveform)
            self._vcd = self._sim.write_vcd(waveform, gtkw_path(waveform),
                                            traces=waveform_groups(self.tpu))
            self._vcd.__enter__()

    async def _serve(self, ctx):
        tpu = self.tpu
        ctx.set(tpu.host_resp.ready, 1)
        while True:
            sending = bool(self._tx)
            if sending:
                ctx.set(tpu.host_cmd.valid, 1)
                ctx.set(tpu.host_cmd.payload, self._tx[0])
            else:
                ctx.set(tpu.host_cmd.valid, 0)
            _, _, ready, rvalid, rdata = await ctx.tick().sample(
                tpu.host_cmd.ready, tpu.host_resp.valid, tpu.host_resp.payload)
            self.cycle += 1
            if sending and ready:
                self._tx.popleft()
            if rvalid:
                self._rx.append(rdata)

    def _step_until(self, condition, limit=10_000_000):
        start = self.cycle
        while not condition():
            try:
                self._sim.advance()
            except KeyboardInterrupt:
                # Finish the packet under way (the device and the host must stay in step),
                # then let the interruption through (see exchange).
                self._interrupted = True
            if self.cycle - start > limit:
                raise TimeoutError("the simulated TPU does not answer")

    _interrupted = False

    def _resume_interruption(self):
        if self._interrupted:
            self._interrupted = False
            raise KeyboardInterrupt

    def exchange(self, words):
        self._rx.clear()
        self._tx.extend(int(w) for w in words)
        self._step_until(lambda: len(self._rx) >= 1)
        command, status, count = parse_header(self._rx[0])
        expected = 1
        if command == Command.READ and status == Status.OK:
            space = (words[0] >> 8) & 0xFF
            expected += count * item_words(self.cfg, Space(space))
        self._step_until(lambda: len(self._rx) >= expected)
        self._step_until(lambda: not self._tx)
        self._resume_interruption()
        return list(self._rx)

    def idle(self, cycles):
        target = self.cycle + cycles
        self._step_until(lambda: self.cycle >= target or self._interrupted)
        self._resume_interruption()

    def close(self):
        if self._vcd is not None:
            self._vcd.__exit__(None, None, None)
            self._vcd = None
