"""The demos behind the command line."""

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
