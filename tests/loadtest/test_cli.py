"""`ringcast loadtest` as a user runs it: bounds, the loopback guard, JSON, plot, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ringcast.cli import main
from ringcast.loadtest.target import TargetError, parse_target

from .helpers import faulty_server, free_port


def test_needs_a_bound(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "ws://127.0.0.1:1/x"]) == 2
    assert "--messages and/or --duration" in capsys.readouterr().err


def test_refuses_non_loopback_without_consent(capsys: pytest.CaptureFixture[str]) -> None:
    # Only parsed: nothing is sent anywhere.
    assert main(["loadtest", "ws://192.0.2.7:8080/x", "--messages", "1"]) == 2
    assert "--i-own-this-host" in capsys.readouterr().err
    with pytest.raises(TargetError):
        parse_target("ws://192.0.2.7/x")
    t = parse_target("ws://192.0.2.7/x", allow_remote=True)
    assert not t.loopback and t.port == 80 and t.channel == "x"
    assert parse_target("ws://localhost:9/a").loopback
    with pytest.raises(TargetError, match="wss"):
        parse_target("wss://127.0.0.1/x")


def test_small_size_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "ws://127.0.0.1:1/x", "--messages", "1", "--size", "10"]) == 2


def test_nobody_listening_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert main(["loadtest", f"ws://127.0.0.1:{port}/x", "-c", "3", "-m", "1", "-q"]) == 3
    assert "3 refused" in capsys.readouterr().err


def test_pass_writes_json_and_exit_code(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    with faulty_server() as port:
        rc = main(["loadtest", f"ws://127.0.0.1:{port}/c", "-c", "5", "-m", "30", "-q",
                   "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "result     PASS" in text and "deliveries 150" in text
    r = json.loads(out.read_text())
    assert r["pass"] is True and r["run"]["deliveries"] == 150
    assert r["percentile_curves"]["delivery"]


def test_json_dash_writes_the_result_to_stdout_instead_of_the_text(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with faulty_server() as port:
        rc = main(["loadtest", f"ws://127.0.0.1:{port}/c", "-c", "4", "-m", "10", "-q",
                   "--json", "-"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["run"]["deliveries"] == 40
    assert not (tmp_path / "-").exists()


def test_storm_and_processes_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with faulty_server() as port:
        rc = main(["loadtest", f"ws://127.0.0.1:{port}/c", "-c", "8", "-d", "2", "--rate",
                   "40", "-q", "--processes", "2", "--storm", "50%@0.5"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "2 client processes" in out
    assert "storm      4 subscribers dropped at 0.5s: all back in" in out


@pytest.mark.parametrize("storm", ["1", "2@5", "@5", "0@1", "x@y"])
def test_a_malformed_storm_is_a_usage_error(storm: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["loadtest", "ws://127.0.0.1:9/c", "-m", "1", "--storm", storm])
    assert exc.value.code == 2
    assert f"--storm {storm!r}:" in capsys.readouterr().err


def test_faults_give_exit_code_1(capsys: pytest.CaptureFixture[str]) -> None:
    with faulty_server("--drop", "3") as port:
        rc = main(["loadtest", f"ws://127.0.0.1:{port}/c", "-c", "5", "-m", "30", "-q"])
    assert rc == 1
    assert "lost 5" in capsys.readouterr().out


def test_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "p.png"
    with faulty_server() as port:
        rc = main(["loadtest", f"ws://127.0.0.1:{port}/c", "-c", "5", "-d", "1.2",
                   "--rate", "50", "-q", "--plot", str(out)])
    assert rc == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
