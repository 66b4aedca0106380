"""probes.profile (CPU): the shipped profiles are what the code builds from the committed reports in
docs/results and from the published models; bad input is a clear error; the published H100 model and the
measured one are compared on the H100's stored bits."""
import json
from pathlib import Path

import pytest

from probes.errors import UsageError
from probes.profile import DATA_DIR, ProfileError, load_profile, shipped
from probes.profile.build import build_profile, read_report
from probes.profile.published import published_profiles

ROOT = Path(__file__).resolve().parent.parent
R = ROOT / "docs" / "results"
H100 = [R / "h100-2026-11-23/accumulator/accumulator.json.xz", R / "h100-2026-11-23/gemm/gemm-algos.json",
        R / "h100-2026-11-23/gemm/gemm-sweep.json", R / "h100-2026-11-23/fma/fma.json"]
H200 = [R / "h200-2026-11-29/gemm/gemm-algos.json", R / "h200-2026-11-29/gemm/gemm-sweep.json"]


def _shipped(name):
    return json.loads((DATA_DIR / f"{name}.json").read_text())


def _canon(obj):
    return json.loads(json.dumps(obj, sort_keys=True))


def test_h100_and_h200_profiles_rebuild_from_the_committed_reports():
    h100 = build_profile(H100)
    assert _canon(h100) == _shipped("h100")
    assert _canon(build_profile(H200, assume_from=str(DATA_DIR / "h100.json"))) == _shipped("h200")
    assert h100["gpu"]["name"] == "NVIDIA H100 80GB HBM3" and h100["source"]["kind"] == "measured"
    assert {e["basis"] for e in h100["matmul"]} == {"measured"}
    assert h100["linear"]["bfloat16"]["model_text"].startswith("n_b=16 p=2 toward_zero")


def test_h200_marks_what_it_took_from_the_h100():
    h200 = load_profile("h200")
    assert h200["gpu"]["name"] == "NVIDIA H200"
    assert {e["basis"] for e in h200["matmul"]} == {"assumed"}
    assert all(v["basis"] == "assumed" for v in h200["linear"].values())
    assert {e["basis"] for e in h200["k_order"]["entries"]} == {"measured"}        # its own gemm reports
    assert any("same tensor cores assumed" in a for a in h200["assumptions"])
    # the H200's own cuBLAS choices: down at M = 1 splits K in 4 (the H100's in 2)
    def down(prof):
        return {e["M"]: e["split_k"] for e in prof["k_order"]["entries"] if e["dtype"] == "bfloat16"
                and e["shape"] == "down"}
    assert down(h200)[1] == 4 and down(load_profile("h100"))[1] == 2


def test_published_profiles_are_the_shipped_ones():
    pub = published_profiles()
    assert {"t4-like", "a10g-like", "v100-published", "a100-published", "l40s-published", "h100-published",
            "b200-published"} <= set(pub)
    for name, prof in pub.items():
        assert _canon(prof) == _shipped(name), name
    assert set(shipped()) == set(pub) | {"h100", "h200"}
    a10g = pub["a10g-like"]
    assert a10g["linear"]["float16"]["basis"] == "assumed" and "A100" in a10g["assumptions"][0]
    assert pub["t4-like"]["linear"]["float16"]["model_text"].startswith("n_b=4 p=0 toward_zero")
    assert "bfloat16" not in pub["t4-like"]["linear"]


def test_published_h100_against_the_h100s_bits():
    from probes.profile.compare import against_report, compare_profiles
    diff = {r["format"]: r["differs"] for r in compare_profiles(load_profile("h100-published"), load_profile("h100"))}
    assert diff["bfloat16"] == {} and diff["float16"] == {} and diff["tf32"] == {}
    assert diff["float8_e4m3fn"] == {"sum_bits": [24, 14]}
    rep = read_report(H100[0])
    rates = {r["key"]: r["match_rate"] for r in against_report(load_profile("h100-published"), rep, rows=6,
                                                                backends=("triton",))}
    assert rates["accumulator/triton/bfloat16"] == 1.0 and rates["accumulator/triton/float16"] == 1.0
    assert rates["accumulator/triton/float8_e4m3fn"] < 0.95        # no 14-bit accumulator in the published model


def test_bad_inputs(tmp_path):
    with pytest.raises(ProfileError, match="one GPU per profile"):
        build_profile([H100[1], H200[0]])
    with pytest.raises(ProfileError, match="no linear model.*--assume-from"):
        build_profile(H200)
    with pytest.raises(ProfileError, match="no reports"):
        build_profile([])
    with pytest.raises(ProfileError, match="names no GPU"):
        build_profile([R / "h100-2026-11-22/reduction-cpu.json"])
    with pytest.raises(ProfileError, match="unknown profile 'z9000'"):
        load_profile("z9000")
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"schema": "something-else"}))
    with pytest.raises(ProfileError, match="not a driftscope GPU profile"):
        load_profile(str(bad))
    assert issubclass(ProfileError, UsageError)


def test_cli(tmp_path, capsys):
    from probes.profile.__main__ import main
    assert main(["--list"]) == 0
    assert "t4-like" in capsys.readouterr().out
    out = tmp_path / "h100.json"
    assert main([*map(str, H100), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == _shipped("h100")
    with pytest.raises(UsageError, match="--out"):
        main([str(H100[0])])


def test_gpucheck_runs_on_the_cpu(tmp_path, capsys):
    """The GPU validation's code path, against torch's CPU matmul (says nothing about a GPU)."""
    from probes.profile.gpucheck import main
    out = tmp_path / "check.json"
    assert main(["--device", "cpu", "--profile", "a10g-like", "--dtype", "float16", "--shapes", "64x160",
                 "--ms", "2,5", "--rows", "2", "--cols", "8", "--json", str(out)]) == 0
    rep = read_report(out)
    assert [e["key"] for e in rep["experiments"]] == ["gpucheck/float16/64x160/M=2", "gpucheck/float16/64x160/M=5"]
    assert all(0.0 <= e["metrics"]["equal_fraction"] <= 1.0 and e["metrics"]["compared"] == 16
               for e in rep["experiments"])
    with pytest.raises(UsageError, match="--shapes"):
        main(["--device", "cpu", "--profile", "h100", "--shapes", "q_x"])
