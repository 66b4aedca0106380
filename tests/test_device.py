"""probes.device: the machine fingerprint and `python -m probes.device`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from probes.device import (NOT_INSTALLED, cpu_info, fingerprint, fingerprint_summary,
                           format_fingerprint, gpu_info)

try:
    from conftest import gpu_available
except ImportError:  # pragma: no cover
    def gpu_available():
        return False

ROOT = Path(__file__).resolve().parent.parent

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 sse4_2 avx avx2 fma f16c avx512f avx512_bf16 avx512_fp16 amx_tile amx_bf16 ht

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
"""


def test_cpu_info_parses_flags():
    info = cpu_info(CPUINFO)
    assert info["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert info["flags"] == ["amx_bf16", "amx_tile", "avx", "avx2", "avx512_bf16",
                             "avx512_fp16", "avx512f", "f16c", "fma", "sse2", "sse4_2"]
    assert info["flags_count"] == 13 and info["model_number"] == "143"


def test_fingerprint_cpu():
    fp = fingerprint("cpu")
    assert fp["device"] == "cpu" and fp["gpu"] is None
    assert fp["cpu"]["model"] and fp["cpu"]["count"] >= 1
    if sys.platform.startswith("linux"):
        assert fp["cpu"]["flags_count"] > 0 and isinstance(fp["cpu"]["flags"], list)
    v = fp["versions"]
    for name in ("numpy", "ml_dtypes", "torch", "triton", "cupy", "numba", "numba-cuda",
                 "transformers", "nvidia-ml-py", "driftscope", "nvcc", "torch_cuda"):
        assert name in v
    import numpy
    assert v["numpy"] == numpy.__version__
    assert fp["host"]["python"] == ".".join(map(str, sys.version_info[:3]))
    json.dumps(fp, allow_nan=False)  # JSON-able as is
    summary = fingerprint_summary(fp)
    assert summary.startswith("CPU: ") and "cores)" in summary


def test_missing_package_reads_not_installed(monkeypatch):
    from probes import device
    monkeypatch.setitem(device.PACKAGES, "cupy", ("surely-not-a-real-dist-xyz",))
    assert device.package_versions()["cupy"] == NOT_INSTALLED


def test_fingerprint_summary_gpu_and_foreign():
    fp = {"gpu": {"name": "NVIDIA H100 80GB HBM3", "sm": "sm_90", "sm_count": 132,
                  "driver_version": "580.65.06", "cuda_runtime_version": "13.0"},
          "versions": {"torch": "2.11.0+cu130"}}
    assert fingerprint_summary(fp) == ("NVIDIA H100 80GB HBM3 (sm_90, 132 SMs), driver 580.65.06,"
                                       " CUDA 13.0, torch 2.11.0+cu130")
    assert fingerprint_summary({}) == "unknown machine (no fingerprint)"
    assert fingerprint_summary({"gpu": {}}).startswith("unknown GPU")
    assert fingerprint_summary("junk") == "unknown machine (no fingerprint)"


def test_format_fingerprint_aligned():
    text = format_fingerprint({"a": 1, "bb": {"c": None, "d": [1, 2]}, "e": {}})
    assert text.splitlines() == ["a:    1", "bb.c: null", "bb.d: 1 2", "e:    (none)"]


@pytest.mark.skipif(gpu_available(), reason="checks failure handling without a GPU")
def test_gpu_info_never_crashes_without_gpu():
    g = gpu_info(0)
    assert g["name"] is None and "name" in g["errors"]
    assert g["clocks_mhz"]["sm"] is None
    json.dumps(g, allow_nan=False)


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "probes.device", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)


def test_cli_cpu_writes_json(tmp_path):
    out = tmp_path / "deep" / "fp.json"
    p = _run("--device", "cpu", "--json", str(out))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("CPU: ") and "cpu.model:" in p.stdout
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["versions"]["numpy"]


@pytest.mark.skipif(gpu_available(), reason="checks the no-GPU error")
def test_cli_cuda_without_gpu_exits_2():
    p = _run("--device", "cuda")
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device cuda asked for a GPU")


def test_cli_bad_device_exits_2():
    p = _run("--device", "tpu")
    assert p.returncode == 2 and p.stderr == "error: unknown device 'tpu'; use auto, cpu, cuda or cuda:N\n"


@pytest.mark.gpu
def test_fingerprint_cuda():
    fp = fingerprint("cuda")
    g = fp["gpu"]
    assert fp["device"] == "cuda:0"
    for field in ("name", "compute_capability", "sm", "sm_count", "l2_bytes", "memory_bytes",
                  "driver_version", "cuda_runtime_version"):
        assert g[field], (field, g["errors"].get(field))
    assert g["sm"].startswith("sm_") and "SMs" in fingerprint_summary(fp)
    json.dumps(fp, allow_nan=False)
