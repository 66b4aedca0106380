"""probes.cli (argument helpers, device resolution, guarded_main) and probes.progress."""
import argparse
import io
import os

import pytest

from probes import cli
from probes.cli import (add_common_args, guarded_main, parse_csv_choice, parse_sizes,
                        resolve_device)
from probes.errors import NoGPUError, ReportError, UsageError
from probes.progress import Progress

try:
    from conftest import gpu_available
except ImportError:  # pragma: no cover
    def gpu_available():
        return False


def test_parse_sizes():
    assert parse_sizes("1000,4097,2^20,1e6,2**24") == [1000, 4097, 2 ** 20, 10 ** 6, 2 ** 24]
    assert parse_sizes(" 7 , 1_000 ,1.5e3,") == [7, 1000, 1500]
    assert parse_sizes("2^20+3,2**24-1,2^4 + 1") == [2 ** 20 + 3, 2 ** 24 - 1, 17]
    for bad in ("0", "-5", "abc", "1.5", "2^", "", ",", "1e-3", "nan", "2^100", "2^4+", "2^0-1", "2^4+1+1"):
        with pytest.raises(UsageError):
            parse_sizes(bad)


def test_parse_sizes_messages():
    with pytest.raises(UsageError, match="must be positive"):
        parse_sizes("10,0")
    with pytest.raises(UsageError, match="bad size 'x1'"):
        parse_sizes("x1")


def test_parse_csv_choice():
    choices = ["numpy", "torch", "cupy"]
    assert parse_csv_choice("torch, numpy,torch", choices, "backend") == ["torch", "numpy"]
    assert parse_csv_choice("all", choices, "backend") == choices
    assert parse_csv_choice(["cupy"], choices, "backend") == ["cupy"]
    with pytest.raises(UsageError) as info:
        parse_csv_choice("numpy,x", choices, "backend")
    assert str(info.value) == "unknown backend 'x'; available: numpy, torch, cupy"
    with pytest.raises(UsageError, match="no backend given"):
        parse_csv_choice(" , ", choices, "backend")


def test_add_common_args_defaults_and_help():
    p = add_common_args(argparse.ArgumentParser(), json_help="write it here")
    a = p.parse_args([])
    assert (a.device, a.seed, a.json) == ("auto", 0, None)
    a = p.parse_args(["--device", "cuda:1", "--seed", "7", "--json", "x.json"])
    assert (a.device, a.seed, a.json) == ("cuda:1", 7, "x.json")
    text = p.format_help()
    assert "write it here" in text and "first CUDA GPU" in text and "seed" in text


def test_resolve_device_cpu_and_bogus():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device(" CPU ") == "cpu"
    for bad in ("bogus", "cuda:x", "gpu", "cuda:-1", "cuda1"):
        with pytest.raises(UsageError, match="unknown device"):
            resolve_device(bad)


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU message")
def test_resolve_device_cuda_without_gpu():
    with pytest.raises(NoGPUError) as info:
        resolve_device("cuda")
    assert str(info.value).startswith("--device cuda asked for a GPU but none is usable: ")
    with pytest.raises(NoGPUError):
        resolve_device("cuda:1")
    assert resolve_device("auto") == "cpu"
    assert resolve_device(None) == "cpu"


def test_resolve_device_with_fake_gpus(monkeypatch):
    monkeypatch.setattr(cli, "gpu_status", lambda: (2, ""))
    assert resolve_device("auto") == "cuda:0"
    assert resolve_device("cuda") == "cuda:0"
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(UsageError) as info:
        resolve_device("cuda:2")
    assert str(info.value) == "--device cuda:2: there are only 2 usable GPUs (cuda:0..cuda:1)"
    monkeypatch.setattr(cli, "gpu_status", lambda: (0, "no driver"))
    with pytest.raises(NoGPUError, match="none is usable: no driver"):
        resolve_device("cuda:0")


# ---------------------------------------------------------------------------------------------
# guarded_main


def _raiser(exc):
    def main(argv):
        raise exc
    return main


def test_guarded_main_error_line(capsys, monkeypatch):
    monkeypatch.delenv("DRIFTSCOPE_DEBUG", raising=False)
    assert guarded_main(_raiser(ReportError("a.json: no such\nfile"))) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: a.json: no such file\n" and captured.out == ""
    assert guarded_main(_raiser(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_guarded_main_status_and_argv(capsys):
    seen = []

    def main(argv):
        seen.append(argv)
        print("hello")
        return 3 if argv else None

    assert guarded_main(main, ["x"]) == 3
    assert guarded_main(main) == 0
    assert seen == [["x"], None]
    assert capsys.readouterr().out == "hello\nhello\n"


def test_guarded_main_debug_reraises(monkeypatch):
    monkeypatch.setenv("DRIFTSCOPE_DEBUG", "1")
    with pytest.raises(UsageError):
        guarded_main(_raiser(UsageError("bad")))


def test_guarded_main_lets_bugs_through(monkeypatch):
    monkeypatch.delenv("DRIFTSCOPE_DEBUG", raising=False)
    with pytest.raises(ZeroDivisionError):
        guarded_main(_raiser(ZeroDivisionError()))


# ---------------------------------------------------------------------------------------------
# Progress


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class TTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_not_a_tty_throttles(monkeypatch):
    monkeypatch.delenv("DRIFTSCOPE_NO_PROGRESS", raising=False)
    clock, out = FakeClock(), io.StringIO()
    with Progress(10, "probe", stream=out, clock=clock) as bar:
        for i in range(10):
            clock.t += 1.0
            bar.update(note=f"case {i}")
    lines = out.getvalue().splitlines()
    assert lines == ["probe [5/10] case 4 (5.0s)", "probe [10/10] case 9 (10.0s)"]


def test_progress_tty_single_line(monkeypatch):
    monkeypatch.delenv("DRIFTSCOPE_NO_PROGRESS", raising=False)
    clock, out = FakeClock(), TTY()
    with Progress(3, "probe", stream=out, clock=clock) as bar:
        for _ in range(3):
            clock.t += 1.0
            bar.update()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("probe [3/3] (3.0s)\n")
    assert text.startswith("\rprobe [1/3] (1.0s)")


def test_progress_disabled(monkeypatch):
    monkeypatch.setenv("DRIFTSCOPE_NO_PROGRESS", "1")
    out = io.StringIO()
    with Progress(3, "probe", stream=out) as bar:
        bar.update(3)
    assert out.getvalue() == ""


@pytest.mark.gpu
def test_resolve_device_with_gpu():
    assert resolve_device("cuda") == "cuda:0"
    assert resolve_device("auto") == "cuda:0"
    n, reason = cli.gpu_status()
    assert n >= 1 and reason == ""
    with pytest.raises(UsageError, match=f"only {n} usable GPU"):
        resolve_device(f"cuda:{n}")


def test_report_path_and_plot_helpers(tmp_path, capsys):
    import argparse

    parser = cli.add_plot_args(cli.add_common_args(argparse.ArgumentParser()))
    args = parser.parse_args([])
    fp = {"gpu": {"name": "NVIDIA H100 80GB HBM3"}}
    assert cli.report_path(args, "fma", fp, "cuda:0") == os.path.join("reports", "fma-nvidia-h100-80gb-hbm3.json")
    assert cli.report_path(args, "fma", fp, "cpu") == os.path.join("reports", "fma-cpu.json")
    args = parser.parse_args(["--json", str(tmp_path / "r.json")])
    assert cli.report_path(args, "fma", fp, "cuda:0") == str(tmp_path / "r.json")

    drawn = []
    assert cli.write_plot(args, str(tmp_path / "r.json"), lambda rep, p: drawn.append(p), {}) == str(tmp_path / "r.png")
    assert drawn == [str(tmp_path / "r.png")]

    def no_matplotlib(rep, p):
        raise ImportError("matplotlib")
    assert cli.write_plot(args, str(tmp_path / "r.json"), no_matplotlib, {}) is None
    assert "skipped (matplotlib is not installed)" in capsys.readouterr().out
    args = parser.parse_args(["--no-plot"])
    assert cli.write_plot(args, "x.json", lambda rep, p: drawn.append(p), {}) is None and len(drawn) == 1
