"""A transport for cocotb testbenches: drive the TPU's Verilog (``tinytpu verilog``) in your
own simulation with the whole runtime (compiler, plans, ``Accelerator``).

Inside a cocotb test::

    import cocotb
    from cocotb.clock import Clock
    from cocotb.task import bridge
    from tinytpu_hdl import Accelerator, TPUConfig
    from tinytpu_hdl.runtime.cocotb_transport import CocotbTransport

    @cocotb.test()
    async def xor(dut):
        cfg = TPUConfig(n=2)
        transport = CocotbTransport(cfg, dut)
        await transport.start()                     # clock and reset
        acc = Accelerator(cfg, transport=transport)
        outputs = await bridge(acc.forward)(model, x)

The runtime is synchronous: run it in a thread with ``cocotb.task.bridge``; each host
command then moves through the simulation (``exchange`` waits on the simulator through
``cocotb.task.resume``). Inputs change after the falling edge and outputs are sampled in
the read-only phase before the rising edge, cycle for cycle as the other backends do.
"""

__all__ = ["CocotbTransport"]


class CocotbTransport:
    """A transport (see :mod:`.driver`) to a ``tinytpu`` top module under cocotb: ``dut`` is
    cocotb's handle of it (ports ``clk``, ``rst``, ``host_cmd__*``, ``host_resp__*``)."""

    def __init__(self, cfg, dut, *, period_ns=10):
        from cocotb.task import resume
        self.cfg = cfg
        self.dut = dut
        self.period_ns = period_ns
        self.cycle = 0
        self.exchange = resume(self._exchange)
        self.idle = resume(self._idle)

    async def start(self):
        """Start the clock and hold reset for two cycles."""
        import cocotb
        from cocotb.clock import Clock
        from cocotb.triggers import FallingEdge
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, self.period_ns, unit="ns").start())
        dut.rst.value = 1
        dut.host_cmd__valid.value = 0
        dut.host_cmd__payload.value = 0
        dut.host_resp__ready.value = 1
        for _ in range(2):
            await FallingEdge(dut.clk)
        dut.rst.value = 0

    async def _cycle(self):
        """One cycle from a falling edge: (command taken, response word or None)."""
        from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
        dut = self.dut
        await ReadOnly()
        taken = bool(dut.host_cmd__valid.value) and bool(dut.host_cmd__ready.value)
        word = int(dut.host_resp__payload.value) if int(dut.host_resp__valid.value) else None
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        self.cycle += 1
        return taken, word

    async def _exchange(self, words):
        from ..host_protocol import response_length
        dut = self.dut
        sent, got, expected = 0, [], None
        while expected is None or len(got) < expected or sent < len(words):
            dut.host_cmd__valid.value = int(sent < len(words))
            dut.host_cmd__payload.value = int(words[sent]) if sent < len(words) else 0
            dut.host_resp__ready.value = 1
            taken, word = await self._cycle()
            sent += taken
            if word is not None:
                got.append(word)
                if len(got) == 1:
                    expected = response_length(self.cfg, words[0], word)
        dut.host_cmd__valid.value = 0
        return got

    async def _idle(self, cycles):
        self.dut.host_cmd__valid.value = 0
        for _ in range(int(cycles)):
            await self._cycle()
