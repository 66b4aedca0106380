"""M buckets, candidates and the bench's choice of the batch-invariant Triton matmul (pure Python, CPU)."""
import json

import pytest

from probes.gemm import triton_bench as B
from probes.gemm import triton_configs as C


def test_buckets_are_the_documented_ones():
    # M <= 8, 9..16, 17..32, ... 1025..1536, 1537..2048, > 2048, measured at 1, 16, 32, ... 1400, 2048, 4096
    assert C.BUCKETS == ((8, 1), (16, 16), (32, 32), (64, 64), (128, 128), (256, 256), (512, 512), (1024, 1024),
                         (1536, 1400), (2048, 2048), (None, 4096))
    expect = {1: 0, 8: 0, 9: 1, 16: 1, 17: 2, 33: 3, 64: 3, 65: 4, 128: 4, 129: 5, 257: 6, 512: 6, 513: 7,
              1024: 7, 1025: 8, 1400: 8, 1536: 8, 1537: 9, 2048: 9, 2049: 10, 4096: 10, 10 ** 6: 10}
    assert {m: C.bucket_of(m) for m in expect} == expect
    assert [C.bucket_of(b) for _, b in C.BUCKETS] == list(range(11))
    assert [C.bucket_range(i) for i in (0, 1, 8, 10)] == ["1-8", "9-16", "1025-1536", ">=2049"]
    with pytest.raises(ValueError):
        C.bucket_of(0)
    # every M the issue lists falls in a bucket whose measurement M is itself or shares its padded tile
    assert {C.BUCKETS[C.bucket_of(m)][1] for m in (1, 2, 4, 8)} == {1}


def test_candidates_share_the_wgmma_k_chain():
    """Every GPU candidate: wgmma-sized (the instruction's 64-row side from a 4-warp group); a split class's
    candidates split K the same way (their k-tiles divide the slice alignment) and only there."""
    for c in C.all_candidates():
        assert c["impl"] in ("tma", "swap", "handoff", "wide", "mixed") and c["num_warps"] % 4 == 0
        rows_side = c["BLOCK_N"] if c["impl"] == "swap" else c["BLOCK_M"]
        other_side = c["BLOCK_M"] if c["impl"] == "swap" else c["BLOCK_N"]
        assert rows_side >= 64 and other_side >= 16 and c["BLOCK_K"] % 16 == 0
        assert C.config_by_name(C.config_name(c)) == c
        if C.split_of(c) > 1:
            assert c["impl"] in ("tma", "swap") and C.SPLIT_ALIGN % c["BLOCK_K"] == 0
            assert c["SPLIT_INLINE"] or not c["FLATTEN"]
            assert not c["SPLIT_INLINE"] or c["BLOCK_M"] * c["BLOCK_N"] <= 128 * 128  # two fp32 tiles fit
    for m in (1, 64, 1400, 4096):
        assert all(C.split_of(c) == 1 for c in C.candidates(4096, 4096, m))
        assert all(C.split_of(c) == 3 for c in C.candidates(4096, 4096, m, split=3))
    assert C.ANCHOR in C.candidates(4096, 4096, 64) and C.ANCHOR in C.candidates(4096, 4096, 4096)
    assert C.anchor_for(1) is C.ANCHOR and C.config_name(C.anchor_for(3)) == "tma-128x128x64-g8-s4-w8-k3i"
    assert C.anchor_for(3) in C.candidates(4096, 4096, 4096, split=3)
    assert C.split_trials(4096, 4096) == (1, 3) and C.split_trials(32000, 4096) == (1,)
    from probes.gemm.triton_splitk import SPLIT_ALIGN
    assert SPLIT_ALIGN == C.SPLIT_ALIGN


def test_split_configs_are_checked():
    for bad, match in [(dict(impl="handoff", split=3), "impl"), (dict(impl="tma", split=1.5), "split"),
                       (dict(impl="tma", split=3, bk=96), "BLOCK_K"), (dict(impl="tma", split=3, flatten=True),
                                                                        "flattened")]:
        kw = dict(bad)
        impl, bk = kw.pop("impl"), kw.pop("bk", 64)
        with pytest.raises(ValueError, match=match):
            C.cfg(impl, 128, 128, bk, **kw)
    assert C.config_name(C.cfg("swap", 16, 64, 256, flatten=False, split=3)).endswith("-nf-k3")
    table = [C.ANCHOR] * (len(C.BUCKETS) - 1) + [C.anchor_for(3)]
    with pytest.raises(ValueError, match="mixes split counts"):
        C.check_table(table)
    with pytest.raises(ValueError, match="11 buckets"):
        C.check_table([C.ANCHOR] * 5)


def test_config_for_uses_the_table_of_m_bucket(monkeypatch):
    monkeypatch.setattr(C, "CHOICES", {})
    monkeypatch.setattr(C, "SHIPPED", {})
    assert C.config_for(4096, 4096, "bfloat16", 7) is C.ANCHOR  # nothing measured: the anchor for every M
    table = [C.all_candidates()[i] for i in range(len(C.BUCKETS))]
    C.CHOICES[(4096, 4096, "bfloat16")] = table
    for m in (1, 8, 9, 16, 17, 128, 129, 512, 513, 1400, 2048, 2049, 5000):
        assert C.config_for(4096, 4096, "bfloat16", m) is table[C.bucket_of(m)]
    assert C.config_for(4096, 4096, "torch.float16", 20) is table[2]  # fp16 borrows bf16's table
    assert C.config_for(4096, 4096, "bfloat16", 20, "cpu") is C.INTERPRETER_CONFIG
    assert C.config_for(1024, 4096, "bfloat16", 20) is C.ANCHOR
    shipped = [C.anchor_for(3)] * len(C.BUCKETS)
    C.SHIPPED[(1024, 4096, "bfloat16")] = shipped
    C.SHIPPED[(4096, 4096, "bfloat16")] = shipped
    assert C.config_for(1024, 4096, "bfloat16", 20) is shipped[2]            # shipped where nothing explicit
    assert C.config_for(4096, 4096, "bfloat16", 20) is table[2]              # explicit tables win


def _row(config, m, ratio, same=True, **extra):
    return {"shape": "q_o", "N": 4096, "K": 4096, "M": m, "dtype": "bfloat16", "config": C.config_name(config),
            "split_k": C.split_of(config), "ratio": ratio, "target": B.target_ratio(m),
            "bit_identical_to_anchor": same, **extra}


def test_choose_per_bucket_only_bit_identical(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "CHOICES", {})
    BC = C.BUCKET_CANDIDATES
    a, s16, s64, big = C.ANCHOR, BC[1][0], BC[3][0], BC[10][2]
    rows = [_row(a, 16, 0.5), _row(s16, 16, 0.95), _row(BC[1][1], 16, 2.0, same=False),
            _row(a, 64, 0.7), _row(s64, 64, 0.92), _row(BC[3][1], 64, 0.0, error="CompilationError"),
            _row(a, 4096, 0.84), _row(big, 4096, 0.93)]
    picked = B.choose(rows)["q_o"]
    table = C.CHOICES[(4096, 4096, "bfloat16")]
    # measured buckets: the fastest bit-identical row; the faster row with other bits is never chosen
    assert table[1] == s16 and table[3] == s64 and table[10] == big
    # unmeasured buckets take the nearest measured one (ties: the smaller bucket)
    assert table[0] == s16 and table[2] == s16 and table[4] == s64 and table[6] == s64 and table[7] == big
    assert picked["not_identical"] == [C.config_name(BC[1][1])]
    assert picked["score"] == pytest.approx(min(0.95, 0.92, 0.93) / 0.9)
    assert picked["meets_targets"] and picked["split_k"] == 1
    assert picked["by_m"] == {16: C.config_name(s16), 64: C.config_name(s64), 4096: C.config_name(big)}
    path = tmp_path / "choices.json"
    C.save_choices(path, gpu={"name": "NVIDIA H200", "compute_capability": "9.0"})
    C.CHOICES.clear()
    header = C.load_choices(path)
    assert C.CHOICES[(4096, 4096, "bfloat16")] == table
    assert header["gpu"]["name"] == "NVIDIA H200" and header["remapped_from"] is None
    doc = json.loads(path.read_text())
    assert doc["format"] == C.FILE_FORMAT and doc["rows"][0]["split_k"] == 1
    doc["rows"][0]["buckets"] = doc["rows"][0]["buckets"][:3]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="bucket limits"):
        C.load_choices(path)


def test_choose_takes_the_split_class_with_the_better_worst_bucket(monkeypatch):
    """A split class is all or nothing for a shape: its table wins only if its worst bucket beats the one-chain
    table's worst bucket; graph ratios count where measured (a row's score is the worse of the two)."""
    monkeypatch.setattr(C, "CHOICES", {})
    one, three = C.candidates(4096, 4096, 1400)[0], C.candidates(4096, 4096, 1400, split=3)[0]
    small1, small3 = C.candidates(4096, 4096, 1)[0], C.candidates(4096, 4096, 1, split=3)[0]
    rows = [_row(small1, 1, 1.05), _row(one, 1400, 0.85),
            _row(small3, 1, 1.2, graph_ratio=0.95), _row(three, 1400, 0.97)]
    picked = B.choose(rows)["q_o"]
    assert picked["split_k"] == 3 and picked["classes"] == {1: round(0.85 / 0.9, 4), 3: round(0.95 / 0.9, 4)}
    assert set(C.split_of(c) for c in C.CHOICES[(4096, 4096, "bfloat16")]) == {3}
    assert picked["buckets"][0]["graph_ratio"] == 0.95 and picked["buckets"][0]["meets"]
    rows[2]["graph_ratio"] = 0.5     # the split class's decode bucket now loses on graph time
    assert B.choose(rows)["q_o"]["split_k"] == 1


def test_choose_misses_targets_when_slow(monkeypatch):
    monkeypatch.setattr(C, "CHOICES", {})
    picked = B.choose([_row(C.ANCHOR, 256, 0.8), _row(C.ANCHOR, 4096, 0.95)])["q_o"]
    assert not picked["meets_targets"] and picked["score"] == pytest.approx(0.8 / 0.9)
    # buckets 0-7 lie nearer to 256's bucket (5) than to 4096's (10) and take its row; 8-10 take 4096's
    assert [b["meets"] for b in picked["buckets"]] == [False] * 8 + [True] * 3


def test_remap_old_bucket_limits():
    old = [C.BUCKET_CANDIDATES[i][0] for i in (1, 3, 5, 8, 10)]
    new = C.remap(old, [16, 128, 512, 2048, None])
    assert new == [old[0], old[0], old[1], old[1], old[1], old[2], old[2], old[3], old[3], old[3], old[4]]
    with pytest.raises(ValueError, match="bucket limits"):
        C.remap(old, [16, 128, 512, 2048, 4096])


def test_first_runs_files_load_remapped_and_split_k_is_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "CHOICES", {})
    v1 = [{"N": 1024, "K": 4096, "dtype": "bfloat16",
           "buckets": [{"max_m": hi, "config": C.ANCHOR} for hi in (16, 128, 512, 2048, None)]}]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(v1))
    header = C.load_choices(path)
    assert header["remapped_from"] == [(16, 128, 512, 2048, None)]
    assert C.CHOICES[(1024, 4096, "bfloat16")] == [C.ANCHOR] * len(C.BUCKETS)
    v1[0]["split_k"] = 3
    path.write_text(json.dumps(v1))
    with pytest.raises(ValueError, match="split_k 3"):
        C.load_choices(path)


# ---- the tables shipped with the package, per GPU ------------------------------------------------------

def test_shipped_tables_are_valid_and_one_split_class_per_shape():
    """Every shipped table reads (bucket limits, one split class per shape), names only known configs, covers
    the Mistral shapes; and every GPU's table splits each (N, K) the same way, so an H100 and an H200
    give the same bits (the same wgmma chains, only other tiles)."""
    files = C.shipped_files()
    assert {"h200.json", "h100.json"} <= set(files)
    assert files["h200.json"] == {"name": "NVIDIA H200", "compute_capability": "9.0", "sm_count": 132}
    splits = {}
    for name in files:
        tables, header = C.read_choices(C.CHOICES_DIR / name)
        assert header["format"] == C.FILE_FORMAT and header["remapped_from"] is None
        assert {(n, k) for n, k, _ in tables} == set(C.MISTRAL_SHAPES.values())
        for (n, k, d), cs in tables.items():
            assert [C.config_by_name(C.config_name(c)) for c in cs] == cs
            splits.setdefault((n, k, d), set()).add(C.split_of(cs[0]))
    assert all(len(v) == 1 for v in splits.values()), splits
    assert C.DEFAULT_BY_CC["9.0"] in files


@pytest.mark.parametrize("name, cc, file, kind", [
    ("NVIDIA H200", "9.0", "h200.json", "measured"),
    ("NVIDIA H100 80GB HBM3", "9.0", "h100.json", "measured"),
    ("NVIDIA H100 PCIe", "9.0", "h200.json", "default"),       # an sm_90 GPU nobody measured
    ("NVIDIA A100-SXM4-80GB", "8.0", None, "none"),            # no default for sm_80: ANCHOR
    (None, None, None, "none")])
def test_select_shipped_by_fingerprint(name, cc, file, kind):
    got, got_kind, reason = C.select_shipped(name, cc)
    assert (got, got_kind) == (file, kind)
    if kind == "default":
        assert "no table measured on NVIDIA H100 PCIe" in reason and "sm_90 default" in reason
    if kind == "none":
        assert "ANCHOR" in reason


def test_use_gpu_tables_loads_the_shipped_table_once(monkeypatch):
    monkeypatch.delenv(C.ENV_VAR, raising=False)
    monkeypatch.setattr(C, "CHOICES", {})
    monkeypatch.setattr(C, "SHIPPED", {})
    monkeypatch.setattr(C, "ACTIVE", None)
    active = C.use_gpu_tables("NVIDIA H200", "9.0")
    assert active["source"] == "shipped" and active["file"] == "h200.json" and active["kind"] == "measured"
    tables, _ = C.read_choices(C.CHOICES_DIR / "h200.json")
    assert C.SHIPPED == tables
    assert C.config_for(4096, 4096, "bfloat16", 1) == tables[(4096, 4096, "bfloat16")][0]
    assert C.use_gpu_tables("NVIDIA A100-SXM4-80GB", "8.0") is active     # decided once per process
    C.reset_tables()
    assert C.use_gpu_tables("NVIDIA A100-SXM4-80GB", "8.0")["source"] == "none" and C.SHIPPED == {}
    assert C.config_for(4096, 4096, "bfloat16", 1) is C.ANCHOR


def test_env_var_overrides_the_shipped_tables(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "CHOICES", {})
    monkeypatch.setattr(C, "SHIPPED", {})
    monkeypatch.setattr(C, "ACTIVE", None)
    monkeypatch.setenv(C.ENV_VAR, str(tmp_path / "mine.json"))
    active = C.use_gpu_tables("NVIDIA H200", "9.0")
    assert active["source"] == C.ENV_VAR and active["kind"] == "override" and C.SHIPPED == {}
    assert C.config_for(4096, 4096, "bfloat16", 1) is C.ANCHOR      # the file has no q_o: not the shipped one


def test_env_var_file_is_loaded_at_import(tmp_path):
    import subprocess
    import sys
    path = tmp_path / "mine.json"
    C.save_choices(path, {(4096, 4096, "bfloat16"): [C.anchor_for(3)] * len(C.BUCKETS)})
    code = ("from probes.gemm import triton_configs as C; import json; "
            "a = C.use_gpu_tables('NVIDIA H200', '9.0'); "
            "print(json.dumps([a['source'], C.config_name(C.config_for(4096, 4096, 'bfloat16', 1)), "
            "C.config_name(C.config_for(1024, 4096, 'bfloat16', 1)), len(C.SHIPPED)]))")
    r = subprocess.run([sys.executable, "-c", code], env=dict(__import__("os").environ, GEMM_TRITON_CHOICES=str(path)),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [C.ENV_VAR, "tma-128x128x64-g8-s4-w8-k3i", C.config_name(C.ANCHOR), 0]


@pytest.mark.parametrize("name, cc, source, kind", [("NVIDIA H100 PCIe", "9.0", "shipped", "default"),
                                                    ("NVIDIA A100-SXM4-80GB", "8.0", "none", "none")])
def test_report_records_the_table_an_unknown_gpu_gets(name, cc, source, kind, monkeypatch):
    """The probe's report says which tables served the GPU of its fingerprint, and why."""
    import probes.device
    from probes.gemm import probe as P
    monkeypatch.delenv(C.ENV_VAR, raising=False)
    monkeypatch.setattr(C, "SHIPPED", {})
    monkeypatch.setattr(C, "ACTIVE", None)
    fp = {"device": "cuda:0", "gpu": {"name": name, "compute_capability": cc}}
    monkeypatch.setattr(probes.device, "fingerprint", lambda device="auto": fp)
    report = P.build_report("cuda:0", 0, ["x"], {})
    t = report["config"]["triton_table"]
    assert (t["source"], t["kind"], t["gpu"], t["compute_capability"]) == (source, kind, name, cc)
    assert name in t["reason"]
    if kind == "default":
        assert t["file"] == "h200.json" and t["measured_on"]["name"] == "NVIDIA H200"
        assert t["tables"]["N=4096,K=4096,bfloat16"][0] == C.config_name(C.SHIPPED[(4096, 4096, "bfloat16")][0])
    else:
        assert t["file"] is None and t["tables"] == {}
    cpu = P.build_report("cpu", 0, ["x"], {})["config"]["triton_table"]
    assert cpu["source"] == "interpreter"


def test_probe_bench_report_table_and_choices_file(tmp_path, monkeypatch):
    """probe.bench -> report -> table -> choices file, with the GPU timing replaced by given rows."""
    from probes import report as reports
    from probes.gemm import probe as P
    from probes.gemm import table

    monkeypatch.setattr(C, "CHOICES", {})
    fake = {"q_o": [_row(C.ANCHOR, 16, 0.5), _row(C.BUCKET_CANDIDATES[1][0], 16, 0.9),
                    _row(C.ANCHOR, 4096, 0.95, triton_ms=1.0)],
            "k_v": [dict(_row(C.ANCHOR, 16, 0.0, error="CompilationError: x"), shape="k_v", N=1024)]}
    for rs in fake.values():
        for r in rs:
            r.update(tflops=100.0 * r["ratio"], cublas_tflops=100.0, cublas_ms=1.0, triton_ms=1.0, bucket=0)
    seen = {}

    def fake_benchmark(shapes, ms, dtype, **kw):
        seen.update(kw)
        return [r for s in shapes for r in fake[s]]
    monkeypatch.setattr(B, "benchmark", fake_benchmark)
    report = reports.new_report("gemm", command=["x"], fingerprint={"device": "cpu"}, config={})
    chosen = P.bench(report, {"q_o": (4096, 4096), "k_v": (1024, 4096)}, [16, 4096], "bfloat16", seed=0,
                     log=lambda s: None, graph=20)
    assert seen["graph"] == 20
    assert list(chosen) == ["q_o"] and chosen["q_o"]["buckets"][1]["config"] == C.config_name(C.BUCKET_CANDIDATES[1][0])
    text = table.format_bench(report)
    assert "ERROR CompilationError" in text and "M        1-8" in text and text.count(" * ") + text.count("*") >= 2
    path = tmp_path / "r.json"
    reports.write_report(report, path)
    assert table.format_bench(reports.load_report(path)) == text  # JSON turns the M keys into strings
    table.plot(reports.load_report(path), tmp_path / "r.png")
    C.save_choices(tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text())["rows"][0]["buckets"][10]["name"] == C.config_name(C.ANCHOR)


@pytest.mark.cpu_modes
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
    assert config["triton_choices_used"]["N=4096,K=4096,bfloat16"] == [C.config_name(C.ANCHOR)] * len(C.BUCKETS)
    assert config["triton_table"]["source"] == "interpreter"
