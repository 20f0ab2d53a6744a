"""The UART host bridge: bytes at the bit level, framing, CRC and timeout errors, and the
runtime's serial backend driving the simulated board top level end to end."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from tinytpu_hdl.config import TPUConfig
from tinytpu_hdl.gateware.uart import UARTReceiver, UARTTransmitter
from tinytpu_hdl.host_protocol import (
    BridgeError, Command, Space, crc16, frame, header, pack_items,
)
from tinytpu_hdl.reference import ReferenceTransport
from tinytpu_hdl.runtime.driver import HostDriver
from tinytpu_hdl.runtime.serial_sim import SimulatedSerialTransport
from tinytpu_hdl.runtime.uart import BridgeFault

from tpu_helpers import snapshot

CFG = TPUConfig(n=2, ub_depth=64, acc_depth=32, imem_depth=64)


def test_crc16_known_value():
    assert crc16(b"123456789") == 0x29B1            # CRC-16/CCITT-FALSE check value


def test_uart_loopback_bit_level():
    m = Module()
    m.submodules.tx = tx = UARTTransmitter(5)
    m.submodules.rx = rx = UARTReceiver(5)
    m.d.comb += rx.rx.eq(tx.tx)
    sent = list(np.random.default_rng(0).integers(0, 256, 12))
    got = []

    async def tb(ctx):
        for value in sent:
            ctx.set(tx.data.payload, int(value))
            ctx.set(tx.data.valid, 1)
            await ctx.tick().until(tx.data.ready)
        ctx.set(tx.data.valid, 0)
        for _ in range(200):
            await ctx.tick()

    async def collect(ctx):
        async for _, _, valid, data in ctx.tick().sample(rx.data.valid, rx.data.payload):
            if valid:
                got.append(data)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.add_process(collect)
    sim.run()
    assert got == sent


@pytest.fixture(scope="module", params=[False, True], ids=["direct", "registered"])
def serial(request):
    """The serial line to a simulated :class:`SerialTPU`, without and with the register
    stages of the ECP5 boards (``pipelined``: commands and responses through registers
    between the bridge and the TPU, the bridge's expected frame length registered)."""
    return SimulatedSerialTransport(CFG, divisor=4, max_words=16, timeout=400,
                                    pipelined=request.param)


def test_memories_and_registers_round_trip_over_the_serial_line(serial):
    """Writes and reads of every space over the simulated serial line, with and without the
    register stages: every word of every answer arrives, in order."""
    d = HostDriver(serial)
    rows = np.array([[3, -4], [500, -600], [-7, 8]])
    d.write(Space.UB, 9, rows)
    d.write(Space.ACC, 2, [[70000, -80000]])
    assert np.array_equal(d.read(Space.UB, 9, 3), rows)
    assert d.read(Space.ACC, 2, 1)[0].tolist() == [70000, -80000]
    assert d.csr(14) & 0xFF == CFG.n


def test_corrupted_frame_is_rejected_and_changes_nothing(serial):
    d = HostDriver(serial)
    d.write(Space.UB, 5, [[7, 8]])
    words = [header(Command.WRITE, Space.UB, 1), 5] + pack_items(CFG, Space.UB, [[-1, -1]])
    bad = bytearray(frame(words))
    bad[9] ^= 0x10                                   # a payload bit flips on the line
    serial.write_bytes(bytes(bad))
    with pytest.raises(BridgeFault) as exc:
        serial.exchange_reply()
    assert exc.value.code == BridgeError.CRC
    assert d.read(Space.UB, 5, 1)[0].tolist() == [7, 8]


def test_truncated_frame_times_out_and_changes_nothing(serial):
    d = HostDriver(serial)
    words = [header(Command.WRITE, Space.UB, 1), 6] + pack_items(CFG, Space.UB, [[-1, -1]])
    serial.write_bytes(frame(words)[:7])
    with pytest.raises(BridgeFault) as exc:
        serial.exchange_reply()
    assert exc.value.code == BridgeError.TIMEOUT
    assert d.read(Space.UB, 6, 1)[0].tolist() == [0, 0]


def test_too_long_frame_is_rejected(serial):
    serial.write_bytes(frame([0] * 17))
    with pytest.raises(BridgeFault) as exc:
        serial.exchange_reply()
    assert exc.value.code == BridgeError.LENGTH
    serial.idle(2000)                                # let the rest of the frame pass by
    assert HostDriver(serial).csr(14) & 0xFF == CFG.n


@pytest.mark.extended
def test_xor_forward_over_the_serial_line_matches_the_reference():
    from test_tpu import xor_forward
    ub, program = xor_forward(2)
    results = []
    for transport in (SimulatedSerialTransport(CFG, divisor=4, max_words=16),
                      ReferenceTransport(CFG)):
        d = HostDriver(transport)
        for addr, rows in ub.items():
            d.write(Space.UB, addr, rows)
        stats = d.run(program)
        results.append((snapshot(d), stats))
    (a, sa), (b, sb) = results
    for key in ("ub", "status", "counters"):
        assert np.array_equal(a[key], b[key]), key
    assert sa == sb and a["ub"][24:28, 0].any()


@pytest.mark.parametrize("words, why", [
    ([header(Command.READ, Space.CSR, 1)], "a READ without its address word"),
    ([header(Command.START, 0, 0)], "a START without its address word"),
    ([header(Command.WRITE, Space.UB, 2), 7, 1], "a WRITE one row short"),
    ([header(Command.READ, Space.CSR, 1), 14, 99], "a READ with a word too many"),
    ([header(Command.WRITE, 9, 1), 0, 5], "a WRITE to no space, with data"),
])
def test_a_frame_that_is_not_one_whole_command_is_refused(serial, words, why):
    """A CRC-valid frame whose packet the TPU could not finish (or would finish early and
    read its tail as a new command) is answered with an error frame, and the link stays
    live."""
    serial.write_bytes(frame(words))
    with pytest.raises(BridgeFault) as exc:
        serial.exchange_reply()
    assert exc.value.code == BridgeError.PACKET, why
    assert HostDriver(serial).csr(14) & 0xFF == CFG.n


@pytest.mark.parametrize("bursts, seed", [(1, 7), pytest.param(40, 8, marks=pytest.mark.extended)])
def test_random_byte_streams_leave_the_link_live(serial, bursts, seed):
    """Bursts of random bytes (with the sync byte and CRC-valid frames of random words mixed
    in), each followed by a correct exchange that must be answered correctly."""
    rng = np.random.default_rng(seed)
    d = HostDriver(serial)
    d.write(Space.UB, 9, [[3, -4]])
    for burst in range(bursts):
        parts = []
        for _ in range(rng.integers(1, 4)):
            kind = rng.integers(3)
            if kind == 0:
                parts.append(bytes(rng.integers(0, 256, rng.integers(1, 40)).tolist()))
            elif kind == 1:                        # a valid frame of random words
                words = [int(w) for w in rng.integers(0, 1 << 32, rng.integers(1, 5))]
                words[0] = words[0] & 0xFFFF00FF | 0x0300      # never space UB: keep row 9
                parts.append(frame(words))
            else:
                parts.append(bytes([0xA5]) + bytes(rng.integers(0, 256, 3).tolist()))
        serial.write_bytes(b"".join(parts))
        serial.idle(serial.divisor * 10 * 200 + 4000)   # the frame timeout, and the answers
        serial.discard_input()
        assert d.csr(14) & 0xFF == CFG.n, f"burst {burst}"
        assert d.read(Space.UB, 9, 1)[0].tolist() == [3, -4]
