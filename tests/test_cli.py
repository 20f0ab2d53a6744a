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
