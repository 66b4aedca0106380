"""`python -m probes.accumulator` on the CPU: simulated device recovered, Triton interpreter runs,
bad arguments give one clear line."""
import json
import subprocess
import sys

import numpy as np
import pytest

from probes.accumulator import __main__ as cli_main
from probes.accumulator.validate import random_operands
from probes.report import decode_output, load_report


def interpreter_dot_reference(A, B):
    """What Triton 3.6's interpreter computes for triton_dot's kernel on float16 operands, in NumPy: the
    operands zero-padded to whole tiles; per program a BLOCK_M x BLOCK_N float32 accumulator, and for each
    32-wide K tile in order ``acc = np.matmul(a, b, dtype=float32) + acc`` (interpreter.py's create_dot).
    With probes.gemm.triton_matmul.interpreter_dot_shim installed in this process (it patches the
    interpreter process-wide when a batch-invariant matmul ran interpreted), the tile's exact products are
    summed in k order instead, then added to acc."""
    import triton.runtime.interpreter as interp

    from probes.accumulator import triton_dot        # imported by the run (interpreted there), not before
    shim = getattr(interp, "_driftscope_dot_shim", False)
    bm, bn, bk = triton_dot.BLOCK_M, triton_dot.BLOCK_N, triton_dot.BLOCK_K
    (M, K), N = A.shape, B.shape[1]
    Ap = np.zeros((-(-M // bm) * bm, -(-K // bk) * bk), np.float16)
    Bp = np.zeros((Ap.shape[1], -(-N // bn) * bn), np.float16)
    Ap[:M, :K], Bp[:K, :N] = A, B
    C = np.empty((Ap.shape[0], Bp.shape[1]), np.float32)
    for i in range(0, Ap.shape[0], bm):
        for j in range(0, Bp.shape[1], bn):
            acc = np.zeros((bm, bn), np.float32)
            for k in range(0, Ap.shape[1], bk):
                a = np.ascontiguousarray(Ap[i:i + bm, k:k + bk])
                b = np.ascontiguousarray(Bp[k:k + bk, j:j + bn])
                if shim:
                    tile = np.zeros((bm, bn), np.float32)
                    for kk in range(bk):
                        tile += a[:, kk:kk + 1].astype(np.float32) * b[kk:kk + 1, :].astype(np.float32)
                else:
                    tile = np.matmul(a, b, dtype=np.float32)
                acc = tile + acc
            C[i:i + bm, j:j + bn] = acc
    return C[:M, :N]

@pytest.mark.cpu_modes

def test_cli_on_cpu_recovers_the_simulated_model_and_runs_triton(tmp_path, capsys):
    out = tmp_path / "acc.json"
    rc = cli_main.main(["--device", "cpu", "--formats", "float16,float8_e5m2", "--backends",
                        "simulated,triton", "--samples", "3000", "--json", str(out),
                        "--fit-evals", "30"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "simulated" in text and "triton" in text
    rep = load_report(out)
    assert rep["fingerprint"] and rep["schema_version"] >= 1
    exps = {e["key"]: e for e in rep["experiments"]}
    sim = exps["accumulator/simulated/float16"]["metrics"]
    assert sim["recovered_true_model"] is True and sim["match_rate"] == 1.0
    assert exps["accumulator/simulated/float8_e5m2"]["metrics"]["recovered_true_model"] is True
    # Triton's interpreter: tl.dot is a NumPy float32 matmul per 32-wide K tile. The stored validation
    # output is exactly that, bit for bit; the fitted model's match rate is measured, not asserted (it is
    # no tensor core: 0.942 here with NumPy's own tl.dot, 2026-12).
    tri = exps["accumulator/triton/float16"]
    assert tri["status"] == "ok" and tri["metrics"]["evidence"]["outputs_hex"]
    A, B, _ = random_operands("float16", tri["inputs"]["M"] * tri["inputs"]["N"], tri["inputs"]["K"],
                              tri["inputs"]["seed"])
    got = decode_output(tri).astype(np.float32).view(np.uint32)
    assert got.shape == (A.shape[0], B.shape[1]) and tri["metrics"]["samples"] == got.size
    assert np.array_equal(got, interpreter_dot_reference(A, B).view(np.uint32))
    assert exps["accumulator/triton/float8_e5m2"]["status"] == "skipped"
    assert "fp8" in exps["accumulator/triton/float8_e5m2"]["message"]
    assert (tmp_path / "acc.png").exists()


@pytest.mark.parametrize("args, msg", [
    (["--samples", "0"], "--samples"),
    (["--fit-evals", "0"], "--fit-evals"),
    (["--formats", "float7"], "float7"),
    (["--backends", "nope"], "nope"),
    (["--device", "cuda:9"], "--device cuda:9"),   # no GPU, or fewer than 10: either way one line naming it
])
def test_bad_arguments_give_one_line(args, msg):
    r = subprocess.run([sys.executable, "-m", "probes.accumulator", "--device", "cpu", "--no-plot",
                        "--json", "/dev/null", *args] if args[0] != "--device" else
                       [sys.executable, "-m", "probes.accumulator", "--no-plot", *args],
                       capture_output=True, text=True, timeout=120)
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and msg in lines[0]


def test_cublas_on_cpu_is_skipped_with_a_reason():
    from probes.accumulator.backends import Cublas
    from probes.probe import Case
    assert "GPU" in Cublas("cpu").unavailable(Case("cpu", backend="cublas", format="float16"))
