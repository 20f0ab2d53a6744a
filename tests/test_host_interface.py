"""The host protocol, answered identically by the gateware and the reference model."""

import re
import zlib
from dataclasses import replace

import numpy as np
import pytest

from tinytpu_hdl.asm import assemble
from tinytpu_hdl.config import TPUConfig
from tinytpu_hdl.gateware.control import CSR, State
from tinytpu_hdl.host_protocol import (
    Command, Space, Status, header, item_words, pack_items, parse_header, unpack_items,
)
from tinytpu_hdl.isa import ErrorCode
from tinytpu_hdl.numeric import FixedFormat
from tinytpu_hdl.reference import ReferenceTPU, ReferenceTransport
from tinytpu_hdl.runtime.accelerator import Accelerator
from tinytpu_hdl.runtime.driver import ConfigMismatch, HostDriver, HostError, TPUError

from tpu_helpers import BACKENDS

CFG = TPUConfig(n=3, ub_depth=16, acc_depth=8, imem_depth=16)


# The gateware also without the registers it keeps for speed (as built for iCE40: another
# read path and another range check).
TRANSPORTS = dict(BACKENDS, pysim_lean=lambda cfg: BACKENDS["pysim"](
    cfg, ram_output_registers=False))


@pytest.fixture(params=sorted(TRANSPORTS))
def transport(request):
    return TRANSPORTS[request.param](CFG)


def status_of(resp):
    return Status(parse_header(resp[0])[1])


def test_pack_unpack_roundtrip():
    rng = np.random.default_rng(0)
    rows = rng.integers(-32768, 32768, (5, CFG.n))
    words = pack_items(CFG, Space.UB, rows)
    assert len(words) == 5 * item_words(CFG, Space.UB) == 10
    assert np.array_equal(np.array(unpack_items(CFG, Space.UB, words)), rows)
    acc_rows = rng.integers(-2**31, 2**31, (3, CFG.n))
    assert np.array_equal(np.array(unpack_items(CFG, Space.ACC, pack_items(CFG, Space.ACC,
                                                                           acc_rows))), acc_rows)
    # Lane 0 in the low bits.
    assert pack_items(CFG, Space.UB, [[1, -1, 2]]) == [0xFFFF0001, 0x0002]


def test_write_then_read_every_space(transport):
    d = HostDriver(transport)
    rng = np.random.default_rng(1)
    ub = rng.integers(-32768, 32768, (CFG.ub_depth, CFG.n))
    acc = rng.integers(-2**31, 2**31, (CFG.acc_depth, CFG.n))
    imem = [int(v) for v in rng.integers(0, 2**62, CFG.imem_depth)]
    d.write(Space.UB, 0, ub)
    d.write(Space.ACC, 0, acc)
    d.write(Space.IMEM, 0, imem)
    d.write_csr(CSR.REG_BASE + 3, 0x1234)
    d.write_csr(CSR.REG_BASE + 0, 0x9999)              # R0 stays zero
    assert np.array_equal(np.array(d.read(Space.UB, 0, CFG.ub_depth)), ub)
    assert np.array_equal(np.array(d.read(Space.ACC, 0, CFG.acc_depth)), acc)
    assert d.read(Space.IMEM, 0, CFG.imem_depth) == imem
    assert d.read(Space.CSR, CSR.REG_BASE, 4) == [0, 0, 0, 0x1234]
    assert d.csr(CSR.INFO) == CFG.n | 16 << 8 | 8 << 16
    assert d.read(Space.CSR, CSR.UB_DEPTH, 3) == [16, 8, 16]
    # The configuration's fingerprint, a CRC-32 of every field: another value of any field
    # changes it.
    assert d.csr(CSR.CONFIG) == CFG.fingerprint() == zlib.crc32(
        b"n=3;data=FixedFormat(16,8);acc=FixedFormat(32,16);scalar=FixedFormat(16,14);"
        b"ub_depth=16;acc_depth=8;imem_depth=16;"
        b"counter_width=64;isolated_multipliers=True;chase_matmul=True;"
        b"registered_requests=True;registered_weight_rows=True;overlap_units=True;"
        b"unit_multipliers='blocks';ub_copy_depth=None;chain_passes=None")
    d.check_config()


@pytest.mark.parametrize("device, message", [
    (replace(CFG, n=2), "n is 2 on the device, 3 here"),
    (replace(CFG, ub_depth=32, imem_depth=64),
     "ub_depth is 32 on the device, 16 here; imem_depth is 64 on the device, 16 here"),
    (replace(CFG, data=FixedFormat(12, 6), acc=FixedFormat(24, 12)),
     "data width is 12 on the device, 16 here; data fraction bits is 6 on the device, 8 here"),
    (replace(CFG, unit_multipliers="shared"), "its CONFIG register reads 0x"),
    (replace(CFG, ub_copy_depth=8), "fields the other registers do not show differ"),
])
def test_a_device_of_another_configuration_is_refused(device, message):
    """The Accelerator reads the device's configuration registers first and refuses a
    device built from another configuration, naming what differs, on every backend (here
    a reference model of another configuration behind the host's transport)."""
    transport = ReferenceTransport(CFG, model=ReferenceTPU(device))
    acc = Accelerator(CFG, transport=transport)
    a = np.arange(4.0).reshape(2, 2) / 8
    with pytest.raises(ConfigMismatch, match=re.escape(message)):
        acc.matmul(a, a)
    with pytest.raises(ConfigMismatch, match=re.escape(message)):
        acc.run("halt")
    # The device's own configuration works.
    acc = Accelerator(device, transport=ReferenceTransport(device, model=transport.model))
    assert np.array_equal(acc.matmul(a, a), a @ a)


def test_out_of_range_write_changes_nothing(transport):
    d = HostDriver(transport)
    d.write(Space.UB, 14, [[1, 2, 3], [4, 5, 6]])
    words = [header(Command.WRITE, Space.UB, 3), 14] + pack_items(CFG, Space.UB, [[9, 9, 9]] * 3)
    assert status_of(transport.exchange(words)) == Status.RANGE
    assert np.array_equal(np.array(d.read(Space.UB, 14, 2)), [[1, 2, 3], [4, 5, 6]])
    with pytest.raises(HostError, match="READ refused: RANGE"):
        d.read(Space.ACC, 7, 2)
    # Addresses are 32-bit words: one beyond 16 bits is out of range, not wrapped.
    d.write(Space.IMEM, 0, [5])
    for space, item in ((Space.UB, [9, 9, 9]), (Space.IMEM, 7)):
        words = [header(Command.WRITE, space, 1), 1 << 16] + pack_items(CFG, space, [item])
        assert status_of(transport.exchange(words)) == Status.RANGE
    assert transport.exchange([header(Command.READ, Space.UB, 1), 1 << 16]) == [
        Command.READ | Status.RANGE << 8]
    assert d.read(Space.IMEM, 0, 1) == [5]
    assert d.read(Space.UB, 0, 1)[0].tolist() != [9, 9, 9]
    # Counts beyond the depth, alone or with an address that would wrap them back in.
    for space, depth in ((Space.UB, CFG.ub_depth), (Space.ACC, CFG.acc_depth),
                         (Space.IMEM, CFG.imem_depth)):
        for count, addr in ((depth + 1, 0), (0xFFFF, 0), (0xFFFF, 0xFFFF), (2, depth - 1),
                            (1, depth)):
            assert transport.exchange([header(Command.READ, space, count), addr]) == [
                Command.READ | Status.RANGE << 8], (space, count, addr)
        assert len(d.read(space, depth - 2, 2)) == 2
    # The stream is still in step: the next command works.
    assert d.read(Space.UB, 15, 1)[0].tolist() == [4, 5, 6]


def test_bad_commands(transport):
    d = HostDriver(transport)
    resp = transport.exchange([header(0x77, 0, 0), 0])
    assert resp == [0x77 | Status.BAD_COMMAND << 8]
    resp = transport.exchange([header(Command.READ, 9, 1), 0])
    assert status_of(resp) == Status.BAD_COMMAND
    assert d.csr(CSR.STATUS) == State.IDLE


def test_start_is_refused_in_the_error_state_until_cleared(transport):
    d = HostDriver(transport)
    d.load_program(assemble("loadw ub[0], rows=9\nhalt"))
    d.start()
    while d.status()[0] == State.RUNNING:                  # the device, not the driver
        transport.idle(8)
    assert d.status()[:2] == (State.ERROR, ErrorCode.BAD_OPERAND)
    with pytest.raises(HostError, match="START refused: REFUSED"):
        d.start(1)
    d.clear()
    assert d.status()[0] == State.IDLE and d.csr(CSR.ERROR_PC) == 0
    d.start(1)                                             # runs the HALT at address 1
    assert d.wait() == State.DONE


def test_the_driver_reports_an_error_and_leaves_the_device_idle(transport):
    d = HostDriver(transport)
    d.load_program(assemble("nop\nloadw ub[0], rows=9\nhalt"))
    with pytest.raises(TPUError) as exc:
        d.run()
    assert exc.value.code == ErrorCode.BAD_OPERAND and exc.value.pc == 1
    assert exc.value.instruction == "loadw ub[0], rows=9"
    assert exc.value.stats.instructions == 1 and exc.value.stats.cycles > 0
    assert d.status()[0] == State.IDLE
    d.start(2)
    assert d.wait() == State.DONE


def test_host_write_while_running_stops_the_program():
    transport = BACKENDS["pysim"](CFG)
    d = HostDriver(transport)
    d.write(Space.ACC, 3, [[7, 7, 7]])
    d.load_program(assemble("loop: nop\ndjnz r0, loop"))
    d.start(0)
    assert d.status()[0] == State.RUNNING                  # CSR reads work while running
    with pytest.raises(HostError, match="READ refused: BUSY"):
        d.read(Space.UB, 0, 1)
    assert d.status()[0] == State.RUNNING                  # a refused read changes nothing
    with pytest.raises(HostError, match="WRITE refused: BUSY"):
        d.write(Space.ACC, 3, [[1, 2, 3]])
    with pytest.raises(TPUError) as exc:
        d.wait()
    assert exc.value.code == ErrorCode.HOST_CONFLICT
    assert d.read(Space.ACC, 3, 1)[0].tolist() == [7, 7, 7]  # the refused write wrote nothing


def test_host_writes_the_buffer_while_a_program_runs():
    """Rows the program does not use are written while it runs (each in a cycle in which
    no engine uses the buffer's shared port), and the program's results do not change."""
    from tinytpu_hdl.reference import ReferenceTransport
    program = assemble("setr r1, 20\nloop: vpu acc[0], ub[0], rows=6, bias=ub[8], path=bias\n"
                       "loadw ub[6], rows=3\nmatmul ub[0], acc[0], rows=6, accumulate\n"
                       "djnz r1, loop\nhalt")
    results = []
    for transport in (BACKENDS["pysim"](CFG, check_collisions=True), ReferenceTransport(CFG)):
        d = HostDriver(transport)
        d.write(Space.UB, 0, np.arange(27).reshape(9, 3) - 13)
        d.write(Space.ACC, 0, np.ones((6, 3), dtype=int) * 300)
        d.load_program(program)
        d.start()
        for row in range(11, 16):                          # while it runs, on pysim
            d.write(Space.UB, row, [[row, -row, 2 * row]])
        running = d.status()[0] == State.RUNNING
        d.wait()
        results.append((np.array(d.read(Space.UB, 0, 16)), np.array(d.read(Space.ACC, 0, 6)),
                        d.stats(), running))
    (u1, a1, s1, running), (u2, a2, s2, _) = results
    assert running                                          # the writes overlapped the run
    assert np.array_equal(u1, u2) and np.array_equal(a1, a2) and s1 == s2
    assert u1[11:16].tolist() == [[r, -r, 2 * r] for r in range(11, 16)]


def test_stop_command():
    transport = BACKENDS["pysim"](CFG)
    d = HostDriver(transport)
    d.load_program(assemble("loop: nop\ndjnz r0, loop"))
    d.start(0)
    d.stop()
    with pytest.raises(TPUError) as exc:
        d.wait()
    assert exc.value.code == ErrorCode.STOPPED and exc.value.pc in (0, 1)
