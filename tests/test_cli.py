"""The demos behind the command line."""

import re

import pytest

from tinytpu_hdl.cli import main


def test_demo_matmul(capsys):
    assert main(["demo", "matmul", "--n", "2", "--tiles", "3", "--rows", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count(" yes") == 3 and "idle cycles between tiles: 0" in out


def test_demo_xor(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "xor"]) == 0
    out = capsys.readouterr().out
    assert "4/4 correct" in out and "cycles per epoch" in out
    assert out.count(" ok") == 4
    pytest.importorskip("matplotlib")
    assert (tmp_path / "xor_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_xor_fails_loudly_when_it_does_not_learn(capsys):
    assert main(["demo", "xor", "--epochs", "3", "--plot", ""]) == 1
    assert "WRONG" in capsys.readouterr().out


def test_demo_xor_with_a_board_configuration(capsys):
    """--board picks the board's TPU configuration (the iCEBreaker's 1x1 array)."""
    assert main(["demo", "xor", "--board", "icebreaker", "--plot", ""]) == 0
    out = capsys.readouterr().out
    assert "(N=1," in out and "4/4 correct" in out


@pytest.mark.parametrize("argv, message", [
    (["demo", "xor", "--backend", "uart"], "needs --board"),
    (["demo", "xor", "--backend", "uart", "--board", "icebreaker"], "needs --port"),
])
def test_uart_demo_needs_a_board_and_a_port(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def test_build_refuses_an_unknown_board(capsys):
    with pytest.raises(SystemExit):
        main(["build", "--board", "de1-soc"])
    assert "invalid choice: 'de1-soc'" in capsys.readouterr().err


def test_build_refuses_a_clock_the_pll_cannot_make_before_running_a_tool(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["build", "--board", "ulx3s-85f", "--n", "1", "--clock-mhz", "500",
              "--out", str(tmp_path)])
    assert "ECP5 PLL output must be 3.125 to 400 MHz, not 500 MHz" in capsys.readouterr().err
    assert not (tmp_path / "tinytpu.json").exists()


def test_build_refuses_a_bad_configuration_field(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["build", "--board", "ulx3s-85f", "--ub-depth", "0", "--out", str(tmp_path)])
    assert "ub_depth" in capsys.readouterr().err


def test_version(capsys):
    from tinytpu_hdl import __version__
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"tinytpu_hdl {__version__}"
    assert __version__.count(".") >= 2


def test_a_missing_pyserial_is_one_line(capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "serial", None)          # import serial fails
    assert main(["demo", "xor", "--backend", "uart", "--board", "icebreaker", "--port",
                 "/dev/ttyUSB9"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("tinytpu: the uart backend needs pyserial: pip install "
                           "'tinytpu_hdl[board]' (or pip install pyserial)")


@pytest.mark.extended
def test_digits_demo_takes_the_boards_configuration(capsys):
    pytest.importorskip("sklearn")
    assert main(["demo", "digits", "--board", "icebreaker", "--epochs", "1", "--plot", ""]) == 0
    out = capsys.readouterr().out
    assert "trains at most 64-10-10 with batch 4" in out and "(N=1)" in out


def _gtkw_traces_exist(vcd, gtkw):
    """Every signal the save file shows is declared in the trace; the groups are there."""
    from tinytpu_hdl.runtime.waveform import GROUPS, _vcd_names
    declared = {name for name, _ in _vcd_names(vcd)}
    text = gtkw.read_text()
    groups = [line[1:] for line in text.splitlines() if line.startswith("-")]
    traces = [re.sub(r"\[\d+:\d+\]$", "", line) for line in text.splitlines()
              if line and line[0] not in "-@["]
    assert {"host stream", "control", "array edges", "vector unit", "gradient unit",
            "memory ports"} <= set(groups) and set(GROUPS) <= set(groups)
    assert traces and all(t in declared for t in traces), \
        [t for t in traces if t not in declared][:5]


@pytest.mark.parametrize("backend", ["pysim", pytest.param("verilator",
                                                           marks=pytest.mark.extended)])
def test_demo_waveform_and_timeline(tmp_path, backend, capsys):
    from tinytpu_hdl.runtime.verilator import verilator_missing
    if backend == "verilator" and verilator_missing():
        pytest.skip(f"verilator backend needs {verilator_missing()}")
    vcd, png = tmp_path / "run.vcd", tmp_path / "step.png"
    assert main(["demo", "xor", "--backend", backend, "--epochs", "2", "--plot", "",
                 "--waveform", str(vcd), "--timeline", str(png)]) in (0, 1)
    out = capsys.readouterr().out
    assert f"timeline of one training step written to {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = vcd.read_text()
    assert "$enddefinitions" in text
    times = [int(line[1:]) for line in text.split("$enddefinitions", 1)[1].splitlines()
             if line.startswith("#")]
    assert len(times) > 100 and times == sorted(times)           # a whole simulation
    _gtkw_traces_exist(vcd, vcd.with_suffix(".gtkw"))


def _parsers():
    """(command path, parser) of the CLI and every subcommand."""
    import argparse
    seen = {}

    def capture(self, argv=None, namespace=None):
        seen["parser"] = self
        raise SystemExit(0)
    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture
    try:
        with pytest.raises(SystemExit):
            main([])
    finally:
        argparse.ArgumentParser.parse_args = original
    todo, found = [(("tinytpu",), seen["parser"])], []
    while todo:
        path, parser = todo.pop()
        found.append((path, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(path + (name,), sub) for name, sub in action.choices.items()]
    return found


def test_every_option_has_help_and_the_demos_take_every_backend():
    from tinytpu_hdl.runtime.accelerator import BACKENDS
    parsers = _parsers()
    assert {" ".join(p) for p, _ in parsers} >= {
        "tinytpu", "tinytpu verilog", "tinytpu demo xor", "tinytpu demo digits",
        "tinytpu build", "tinytpu fuzz", "tinytpu sweep"}
    for path, parser in parsers:
        for action in parser._actions:
            if action.option_strings:
                assert action.help, f"{' '.join(path)} {action.option_strings[0]} has no help"
    for path, parser in parsers:
        if path[-1] in ("xor", "digits"):
            backend, = (a for a in parser._actions if "--backend" in a.option_strings)
            assert tuple(backend.choices) == BACKENDS


@pytest.mark.parametrize("argv, message", [
    (["fuzz", "--cases", "0"], "--cases must be at least 1, not 0"),
    (["fuzz", "--first", "-3"], "--first must be at least 0, not -3"),
    (["fuzz", "--engine", "spark"], "invalid choice: 'spark'"),
    (["sweep", "--n", "2", "--metrics", "area"], "invalid choice: 'area'"),
])
def test_fuzz_and_sweep_refuse_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def test_fuzz_command_runs_a_small_campaign(tmp_path, capsys):
    assert main(["fuzz", "--cases", "3", "--backend", "pysim", "--workers", "1",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 programs on pysim (seeds 0..2" in out and "0 mismatches" in out
