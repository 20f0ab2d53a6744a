# amaranth: UnusedElaboratable=no
"""What a hostile user meets: every hardware error leaves the accelerator usable, no stale
instruction runs, no input is adjusted silently, nothing hangs."""

import re

import numpy as np
import pytest

import tinytpu_hdl.runtime.accelerator as accelerator_module
from tinytpu_hdl import MLP, Accelerator, TPUConfig, TPUError
from tinytpu_hdl.asm import assemble
from tinytpu_hdl.compiler import CompileError
from tinytpu_hdl.demos.xor import XOR_X, XOR_Y, xor_model
from tinytpu_hdl.gateware.control import CSR, State
from tinytpu_hdl.host_protocol import Space
from tinytpu_hdl.isa import ErrorCode, Instruction, Op, encode
from tinytpu_hdl.reference import ReferenceTPU
from tinytpu_hdl.runtime.driver import HostError

CFG = TPUConfig(n=2, ub_depth=64, acc_depth=16, imem_depth=64)
A = np.array([[1.0, 2.0], [3.0, 4.0], [-1.0, 0.5]])
B = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]])

#: A loop of 65535 * 65535 iterations: longer than any budget used here.
LONG = "setr r2, 0\nouter: setr r1, 0\ninner: djnz r1, inner\ndjnz r2, outer\nhalt"


def works(acc):
    """The accelerator still computes: a product checked against numpy."""
    assert np.array_equal(acc.matmul(A, B), A @ B)
    assert acc.driver.status()[0] == State.DONE


def raw_error(acc, words, csrs=()):
    """Run raw instruction words through the driver (what ``run`` refuses to load)."""
    for address, value in dict(csrs).items():
        acc.driver.write_csr(address, value)
    acc.driver.load_program(words)
    acc.driver.set_watchdog(0)
    acc.driver.start()
    with pytest.raises(TPUError) as exc:
        acc.driver.wait()
    return exc.value


@pytest.fixture(params=["reference", "pysim"])
def acc(request):
    with Accelerator(CFG, backend=request.param) as a:
        yield a


@pytest.mark.parametrize("code, program", [
    (ErrorCode.BAD_OPERAND, "loadw ub[0], rows=3\nhalt"),
    (ErrorCode.UB_RANGE, "matmul ub[64], acc[0], rows=1\nhalt"),
    (ErrorCode.ACC_RANGE, "matmul ub[0], acc[15], rows=2\nhalt"),
])
def test_after_a_program_error_the_next_call_works(acc, code, program):
    with pytest.raises(TPUError) as exc:
        acc.run(program)
    assert exc.value.code == code and exc.value.stats.cycles > 0
    assert acc.driver.status()[0] == State.IDLE
    works(acc)


def test_after_every_other_error_the_next_call_works(acc):
    illegal = encode(Instruction(Op.NOP)) | 1 << 120                 # a reserved bit
    assert raw_error(acc, [illegal]).code == ErrorCode.ILLEGAL_INSTRUCTION
    works(acc)
    beyond = encode(Instruction(Op.DJNZ, count=63, a=(0, 1)))      # falls off the end
    assert raw_error(acc, [beyond] * 64, {CSR.REG_BASE + 1: 2}).code == ErrorCode.PC_RANGE
    works(acc)
    with pytest.raises(TPUError) as exc:
        acc.run(LONG, watchdog=500)
    assert exc.value.code == ErrorCode.WATCHDOG and exc.value.stats.cycles >= 500
    works(acc)


def test_after_a_host_conflict_or_a_stop_the_next_call_works():
    with Accelerator(CFG, backend="pysim") as acc:
        for action, code in (("write", ErrorCode.HOST_CONFLICT), ("stop", ErrorCode.STOPPED)):
            acc.driver.load_program(assemble(LONG, scalar=CFG.scalar))
            acc.driver.set_watchdog(0)
            acc.driver.start()
            acc.transport.idle(50)
            if action == "write":
                with pytest.raises(HostError, match="WRITE refused: BUSY"):
                    acc.driver.write(Space.ACC, 0, [[1, 2]])
            else:
                acc.driver.stop()
            with pytest.raises(TPUError) as exc:
                acc.driver.wait()
            assert exc.value.code == code
            works(acc)


def test_a_plan_runs_after_an_error_left_by_raw_driver_use(acc):
    acc.driver.load_program(assemble("loadw ub[0], rows=3\nhalt", scalar=CFG.scalar))
    acc.driver.start()
    while acc.driver.status()[0] == State.RUNNING:
        acc.transport.idle(8)
    assert acc.driver.status()[0] == State.ERROR                  # left in the error state
    works(acc)
    assert acc.driver.csr(CSR.ERROR_PC) == 0


# --- stale instructions -------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("", "the program is empty"),
    ("# only a comment\n\n", "the program is empty"),
    ("nop", r"address 0 \(nop\) falls through to address 1, outside the program"),
    ("setr r1, 3\nloop: djnz r1, loop", "falls through to address 2, outside the program"),
    ("l: djnz r0, l\nhalt", "no halt is reachable"),
    ("djnz r1, 40\nhalt", "branches to address 40, outside the program"),
])
def test_programs_that_could_run_stale_instructions_are_refused(text, message):
    acc = Accelerator(CFG)
    acc.run("matmul ub[0], acc[0], rows=1\nmatmul ub[0], acc[0], rows=1\nhalt")
    with pytest.raises(ValueError, match=message):
        acc.run(text)
    assert acc.run("halt").instructions == 1                       # only its own


# --- no silent adjustment -----------------------------------------------------------------

def test_a_learning_rate_the_registers_cannot_apply_is_refused():
    acc = Accelerator(CFG)
    for lr in (10, 100, 1e6):
        with pytest.raises(CompileError, match=re.escape(f"lr={lr:g}") + " is larger than .* at most 7.9995"):
            acc.train(xor_model(), XOR_X, XOR_Y, lr=lr, epochs=1, batch_size=4)
    # Rounding to the registers' steps: a warning with the value used, when it is off by
    # more than half a percent.
    with pytest.warns(UserWarning, match=r"lr=0.001 is applied as 0.00100708"):
        acc.train(xor_model(), XOR_X, XOR_Y, lr=0.001, epochs=1, batch_size=4)
    assert acc.last_plan.info["effective lr"] == 0.001007080078125


@pytest.mark.parametrize("call, error, message", [
    (lambda a: a.matmul(A + 1j, B), TypeError, "a is complex"),
    (lambda a: a.matmul([["x", "y"]], B), TypeError, "a must be an array of real numbers"),
    (lambda a: a.matmul(A, np.full((2, 3), np.inf)), ValueError, "b: 6 value.* NaN or inf"),
    (lambda a: a.matmul_raw(np.full((2, 2), 40000), np.ones((2, 2), int)), ValueError,
     r"a_raw: 4 value\(s\) outside the raw Q8.8 range \[-32768, 32767\]"),
    (lambda a: a.matmul_raw(np.ones((2, 2)), np.ones((2, 2), int)), TypeError,
     "a_raw must hold raw Q8.8 integers, not float64"),
    (lambda a: a.driver.write(Space.UB, 0, [[70000, 0]]), ValueError,
     r"UB rows hold raw Q8.8 values .* 1 value\(s\) outside it \(e.g. 70000\) would wrap"),
    (lambda a: a.forward(xor_model(), "XOR"), TypeError, "x must be an array of real numbers"),
    (lambda a: a.forward(xor_model(), XOR_X, batch_size=2.5), TypeError,
     "batch_size must be a positive integer, not 2.5"),
    (lambda a: a.train(xor_model(), XOR_X, XOR_Y, lr="0.5", epochs=1, batch_size=4),
     TypeError, "lr must be a real number, not '0.5'"),
    (lambda a: a.train(xor_model(), XOR_X, XOR_Y, lr=0.5, epochs=True, batch_size=4),
     TypeError, "epochs must be a positive integer, not True"),
    (lambda a: a.train(xor_model(), XOR_X, XOR_Y, lr=0.5, epochs=1, batch_size=4,
                       seed=-1), ValueError, r"seed must be an integer from 0 to 4294967295"),
    (lambda a: a.train(xor_model(), XOR_X, XOR_Y * 1j, lr=0.5, epochs=1, batch_size=4),
     TypeError, "y is complex"),
    (lambda a: a.run("halt", watchdog=-5), ValueError, "watchdog must be an integer from 0"),
    (lambda a: MLP([np.eye(2) * 1j], [np.zeros(2)], ["none"]), TypeError,
     r"weights\[0\] is complex"),
    (lambda a: MLP([np.eye(2)], [np.zeros(2)], ["none"], leak="high"), TypeError,
     "leak must be a real number, not 'high'"),
    (lambda a: MLP([np.eye(2)], [np.zeros(2)], ["none"], leak=2.0), ValueError,
     r"leak must be a finite number in \[0, 1\], not 2.0"),
    (lambda a: MLP.random([2, 0, 1]), ValueError, r"sizes\[1\] must be a positive integer"),
    (lambda a: Accelerator(CFG, watchdog=1.5), TypeError, "watchdog must be an integer"),
])
def test_bad_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call(Accelerator(CFG))


def test_cli_names_bad_options(capsys):
    from tinytpu_hdl.cli import main
    for argv, message in ((["demo", "xor", "--epochs", "0"], "epochs must be a positive"),
                          (["demo", "xor", "--lr", "100"], "lr=100 is larger than"),
                          (["demo", "xor", "--n", "0"], "n must be a positive integer")):
        with pytest.raises(SystemExit) as exc:
            main(argv + ["--plot", ""])
        assert exc.value.code == 2 and message in capsys.readouterr().err


# --- nothing hangs ------------------------------------------------------------------------

def test_every_run_has_a_cycle_budget_by_default(monkeypatch):
    """Raw programs get DEFAULT_RUN_WATCHDOG cycles (made small here to keep the test
    short); plans the largest budget the counters hold; both configurable."""
    monkeypatch.setattr(accelerator_module, "DEFAULT_RUN_WATCHDOG", 2000)
    for backend in ("reference", "pysim"):
        with Accelerator(CFG, backend=backend) as acc:
            with pytest.raises(TPUError) as exc:
                acc.run(LONG)
            assert exc.value.code == ErrorCode.WATCHDOG
            assert 2000 <= exc.value.stats.cycles < 2100
            works(acc)
            assert acc.driver.csr(CSR.WATCHDOG_LO) == (1 << 32) - 1      # the plan's
    acc = Accelerator(CFG, watchdog=300)
    with pytest.raises(TPUError, match="WATCHDOG"):
        acc.run(LONG)
    with pytest.raises(TPUError, match="WATCHDOG"):
        acc.train(xor_model(), XOR_X, XOR_Y, lr=0.5, epochs=5, batch_size=4)
    works(Accelerator(CFG, watchdog=0))


def test_ctrl_c_stops_a_reference_run_and_the_next_call_works(monkeypatch):
    acc = Accelerator(CFG)
    calls = []
    real = ReferenceTPU._matmul

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *args)
    monkeypatch.setattr(ReferenceTPU, "_matmul", interrupted)
    with pytest.raises(KeyboardInterrupt):
        acc.matmul(np.ones((4, 9)), np.ones((9, 4)))
    assert acc.driver.status()[:2] == (State.ERROR, ErrorCode.STOPPED)
    works(acc)


def test_ctrl_c_during_a_replayed_reference_run_and_the_next_call_works(monkeypatch):
    """The model replays a run it has recorded (from the second identical call on): an
    interrupt there stops it the same way."""
    from tinytpu_hdl.reference_trace import MatmulBlock
    acc = Accelerator(CFG)
    a, b = np.ones((4, 9)), np.ones((9, 4))
    acc.matmul(a, b)
    assert acc.transport.model.traces.misses == 1

    def interrupted(self, model):
        raise KeyboardInterrupt
    monkeypatch.setattr(MatmulBlock, "execute", interrupted)
    with pytest.raises(KeyboardInterrupt):
        acc.matmul(a, b)
    assert acc.driver.status()[:2] == (State.ERROR, ErrorCode.STOPPED)
    monkeypatch.undo()
    works(acc)
    assert np.allclose(acc.matmul(a, b), a @ b)


def test_ctrl_c_stops_a_simulated_run_and_the_next_call_works(monkeypatch):
    with Accelerator(CFG, backend="pysim") as acc:
        real = acc.transport.idle
        state = {"idles": 0}

        def idle(cycles):
            state["idles"] += 1
            if state["idles"] == 2:
                raise KeyboardInterrupt
            real(cycles)
        monkeypatch.setattr(acc.transport, "idle", idle)
        with pytest.raises(KeyboardInterrupt):
            acc.run(LONG, watchdog=0)
        assert acc.driver.status()[0] == State.IDLE
        monkeypatch.setattr(acc.transport, "idle", real)
        works(acc)
