"""M buckets, candidates and the bench's choice of the batch-invariant Triton matmul (pure Python, CPU)."""
import json

import pytest

from probes.gemm import triton_bench as B
from probes.gemm import triton_configs as C


def test_buckets_are_the_documented_ones():
    # M <= 16, 17..128, 129..512, 513..2048, > 2048, measured at 16, 64, 256, 1400, 4096
    assert C.BUCKETS == ((16, 16), (128, 64), (512, 256), (2048, 1400), (None, 4096))
    expect = {1: 0, 16: 0, 17: 1, 64: 1, 128: 1, 129: 2, 256: 2, 512: 2, 513: 3, 1400: 3, 2048: 3, 2049: 4,
              4096: 4, 10 ** 6: 4}
    assert {m: C.bucket_of(m) for m in expect} == expect
    assert [C.bucket_of(b) for _, b in C.BUCKETS] == [0, 1, 2, 3, 4]
    assert [C.bucket_range(i) for i in range(5)] == ["1-16", "17-128", "129-512", "513-2048", ">=2049"]
    with pytest.raises(ValueError):
        C.bucket_of(0)


def test_candidates_share_the_wgmma_k_chain():
    """Every GPU candidate: wgmma-sized (the instruction's 64-row side from a 4-warp group), no split-K."""
    for c in C.all_candidates():
        assert c["impl"] in ("tma", "swap", "handoff", "wide", "mixed") and c["num_warps"] % 4 == 0
        rows_side = c["BLOCK_N"] if c["impl"] == "swap" else c["BLOCK_M"]
        other_side = c["BLOCK_M"] if c["impl"] == "swap" else c["BLOCK_N"]
        assert rows_side >= 64 and other_side >= 16 and c["BLOCK_K"] % 16 == 0
        assert C.config_by_name(C.config_name(c)) == c
    assert C.ANCHOR in C.candidates(4096, 4096, 64) and C.ANCHOR in C.candidates(4096, 4096, 4096)


def test_config_for_uses_the_table_of_m_bucket(monkeypatch):
    monkeypatch.setattr(C, "CHOICES", {})
    assert C.config_for(4096, 4096, "bfloat16", 7) is C.ANCHOR  # nothing measured: the anchor for every M
    table = [C.all_candidates()[i] for i in range(5)]
    C.CHOICES[(4096, 4096, "bfloat16")] = table
    for m in (1, 16, 17, 128, 129, 512, 513, 2048, 2049, 5000):
        assert C.config_for(4096, 4096, "bfloat16", m) is table[C.bucket_of(m)]
    assert C.config_for(4096, 4096, "torch.float16", 20) is table[1]  # fp16 borrows bf16's table
    assert C.config_for(4096, 4096, "bfloat16", 20, "cpu") is C.INTERPRETER_CONFIG
    assert C.config_for(1024, 4096, "bfloat16", 20) is C.ANCHOR


def _row(config, m, ratio, same=True, **extra):
    return {"shape": "q_o", "N": 4096, "K": 4096, "M": m, "dtype": "bfloat16", "config": C.config_name(config),
            "ratio": ratio, "target": B.target_ratio(m), "bit_identical_to_anchor": same, **extra}


def test_choose_per_bucket_only_bit_identical(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "CHOICES", {})
    a, s16, s64, big = C.ANCHOR, C.BUCKET_CANDIDATES[0][0], C.BUCKET_CANDIDATES[1][0], C.BUCKET_CANDIDATES[4][2]
    rows = [_row(a, 16, 0.5), _row(s16, 16, 0.95), _row(C.BUCKET_CANDIDATES[0][1], 16, 2.0, same=False),
            _row(a, 64, 0.7), _row(s64, 64, 0.85), _row(C.BUCKET_CANDIDATES[1][1], 64, 0.0, error="CompilationError"),
            _row(a, 4096, 0.84), _row(big, 4096, 0.93)]
    picked = B.choose(rows)["q_o"]
    table = C.CHOICES[(4096, 4096, "bfloat16")]
    # measured buckets: the fastest bit-identical row; the faster row with other bits is never chosen
    assert table[0] == s16 and table[1] == s64 and table[4] == big
    # unmeasured buckets take the nearest measured one (ties: the smaller bucket)
    assert table[2] == s64 and table[3] == big
    assert picked["not_identical"] == [C.config_name(C.BUCKET_CANDIDATES[0][1])]
    assert picked["score"] == pytest.approx(min(0.95 / 0.8, 0.85 / 0.8, 0.93 / 0.9))
    assert picked["meets_targets"] and picked["by_m"] == {16: C.config_name(s16), 64: C.config_name(s64),
                                                         4096: C.config_name(big)}
    path = tmp_path / "choices.json"
    C.save_choices(path)
    C.CHOICES.clear()
    C.load_choices(path)
    assert C.CHOICES[(4096, 4096, "bfloat16")] == table
    rows = json.loads(path.read_text())
    rows[0]["buckets"] = rows[0]["buckets"][:3]
    path.write_text(json.dumps(rows))
    with pytest.raises(ValueError, match="bucket limits"):
        C.load_choices(path)


def test_choose_misses_targets_when_slow(monkeypatch):
    monkeypatch.setattr(C, "CHOICES", {})
    picked = B.choose([_row(C.ANCHOR, 256, 0.8), _row(C.ANCHOR, 4096, 0.95)])["q_o"]
    assert not picked["meets_targets"] and picked["score"] == pytest.approx(0.8 / 0.9)
    # bucket 3 is as near to 2 as to 4: the smaller one (measured at 256) wins the tie
    assert [b["meets"] for b in picked["buckets"]] == [False, False, False, False, True]


def test_probe_bench_report_table_and_choices_file(tmp_path, monkeypatch):
    """probe.bench -> report -> table -> choices file, with the GPU timing replaced by given rows."""
    from probes import report as reports
    from probes.gemm import probe as P
    from probes.gemm import table

    monkeypatch.setattr(C, "CHOICES", {})
    fake = {"q_o": [_row(C.ANCHOR, 16, 0.5), _row(C.BUCKET_CANDIDATES[0][0], 16, 0.9),
                    _row(C.ANCHOR, 4096, 0.95, triton_ms=1.0)],
            "k_v": [dict(_row(C.ANCHOR, 16, 0.0, error="CompilationError: x"), shape="k_v", N=1024)]}
    for rs in fake.values():
        for r in rs:
            r.update(tflops=100.0 * r["ratio"], cublas_tflops=100.0, cublas_ms=1.0, triton_ms=1.0, bucket=0)
    monkeypatch.setattr(B, "benchmark", lambda shapes, ms, dtype, **kw: [r for s in shapes for r in fake[s]])
    report = reports.new_report("gemm", command=["x"], fingerprint={"device": "cpu"}, config={})
    chosen = P.GemmProbe(device="cuda", seed=0, log=lambda s: None).bench(
        report, {"q_o": (4096, 4096), "k_v": (1024, 4096)}, [16, 4096], "bfloat16")
    assert list(chosen) == ["q_o"] and chosen["q_o"]["buckets"][0]["config"] == C.config_name(C.BUCKET_CANDIDATES[0][0])
    text = table.format_bench(report)
    assert "ERROR CompilationError" in text and "M       1-16" in text and text.count(" * ") + text.count("*") >= 2
    path = tmp_path / "r.json"
    reports.write_report(report, path)
    assert table.format_bench(reports.load_report(path)) == text  # JSON turns the M keys into strings
    table.plot(reports.load_report(path), tmp_path / "r.png")
    C.save_choices(tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text())[0]["buckets"][4]["name"] == C.config_name(C.ANCHOR)


def test_sweep_report_records_the_choices_file(tmp_path, monkeypatch):
    """The sweep notes which recorded choices it ran with (GEMM_TRITON_CHOICES, loaded at import)."""
    from probes.gemm.__main__ import main
    monkeypatch.setattr(C, "CHOICES", {(4096, 4096, "bfloat16"): [C.ANCHOR] * len(C.BUCKETS)})
    monkeypatch.setenv("GEMM_TRITON_CHOICES", "/some/choices.json")
    path = tmp_path / "s.json"
    assert main(["--device", "cpu", "--json", str(path), "--parts", "sweep", "--sweep-modes", "torch:float32",
                 "--sweep-max-m", "3", "--no-others", "--no-plot"]) == 0
    config = json.loads(path.read_text())["config"]
    assert config["triton_choices_file"] == "/some/choices.json"
    assert config["triton_choices_used"] == {"N=4096,K=4096,bfloat16": [C.config_name(C.ANCHOR)] * 5}
