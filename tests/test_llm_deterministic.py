"""llm.deterministic() on the CPU: the torch.library mode (kernels in Triton's interpreter) inside transformers'
continuous-batching engine, its negative controls, and what it refuses to call deterministic."""
import warnings

import pytest
import torch

from llm.determinism import DeterminismWarning, audit, deterministic, mode_context
from llm.engine import Request, run_engine
from llm.serve import analyse, engine_config, make_traffic
from probes.errors import UsageError

pytestmark = pytest.mark.cpu_modes       # the mode's kernels run in Triton's interpreter on CPU tensors here


@pytest.fixture(scope="module")
def tiny_bf16():
    from llm.models import load
    return load("mistral-tiny", device="cpu", dtype=torch.bfloat16)


def _serve(lm, mode, planted=False, attn="sdpa"):
    ids = lm.tokenizer.encode("I enjoy walking in the")
    traffic = make_traffic(lm.tokenizer, ids, copies=2, background=3, seed=1, max_new_tokens=3, span=4,
                           prompt_len=(2, 10))
    cbc = engine_config(traffic, "cpu")
    probes = [r.rid for r in traffic if r.kind == "probe"]
    undo = _plant(lm.model) if planted else (lambda: None)
    try:
        with mode_context(mode) as det:
            run = run_engine(lm.model, traffic, tracked=probes, cb_config=cbc, audit_steps=1 if det else 0,
                             attn_implementation=attn)
            alone = run_engine(lm.model, [Request("alone", "alone", 0, ids, 3)], tracked=["alone"], cb_config=cbc,
                               attn_implementation=attn)
    finally:
        undo()
    return analyse(run, probes, alone, lm.tokenizer), det, run


def _plant(model):
    """A batch-dependent op the mode cannot see: L0.o_proj's output scaled by a factor that depends on how many
    tokens the engine step packs (module code, not an aten op the mode replaces)."""
    mod = model.model.layers[0].self_attn.o_proj
    orig = type(mod).forward
    mod.forward = lambda x: orig(mod, x) * (1.0 + 2.0 ** -6 * (x.shape[-2] % 3))
    return lambda: delattr(mod, "forward")


def test_deterministic_copies_equal_alone_bit_for_bit(tiny_bf16):
    """Every copy's logits at every token equal the prompt decoded alone. (The shipped kernels' dependence on the
    batch is shown in float32 by test_llm_serve; in bfloat16 this CPU's kernels happened to keep their bits for
    this traffic, so the negative control here is the planted op below.)"""
    det_res, det, run = _serve(tiny_bf16, "deterministic")
    summary = det.summary()
    assert summary["deterministic"], summary["uncovered"]
    assert {"mm", "mean.dim", "scaled_dot_product_attention"} <= set(summary["calls"])
    assert det_res["copies_logits_equal_alone"] == det_res["copies"] == 2 and det_res["n_distinct"] == 1
    assert run.audit == {}                              # no reducing aten op outside the mode ran
    assert max(s["requests"] for s in run.steps) >= 3   # the copies shared steps with other requests


def test_checker_catches_a_planted_batch_dependent_op(tiny_bf16):
    res, det, _ = _serve(tiny_bf16, "deterministic", planted=True)
    assert res["copies_logits_equal_alone"] < res["copies"]


def test_eager_attention_is_not_covered_and_says_so(tiny_bf16):
    """Eager attention multiplies P by the packed V with bmm: a request's keys sit at another offset of the reduction
    in every batch, and no generic bmm can make that invariant. The mode does not replace bmm; the audit of the first
    engine step names it and the run is marked not deterministic."""
    with pytest.warns(DeterminismWarning, match="bmm"):
        _, det, run = _serve(tiny_bf16, "deterministic", attn="eager")
    assert "bmm" in run.audit and not det.summary()["deterministic"]


def test_mode_registers_and_restores(tiny_bf16):
    import llm
    a = torch.randn(5, 64).bfloat16()
    b = torch.randn(64, 32).bfloat16()
    with llm.deterministic() as mode:
        y = a @ b
        with pytest.raises(UsageError, match="already on"):
            with deterministic():
                pass
    assert mode.calls["mm"] == 1 and mode.summary()["deterministic"]
    ref = (a.float() @ b.float())
    assert (y.float() - ref).abs().max() <= 0.02 * ref.abs().max()
    a @ b
    assert mode.calls["mm"] == 1                        # the shipped kernel is back


def test_uncovered_cases_warn_and_mark_the_run():
    x = torch.randn(4, 8)
    with pytest.warns(DeterminismWarning, match="aten::mm"):
        with deterministic() as mode:
            y = x @ torch.randn(8, 3)                   # float32: the matmul kernel is bf16/fp16 only
    assert y.shape == (4, 3) and not mode.summary()["deterministic"]
    assert any("aten::mm" in k for k in mode.summary()["uncovered"])


def test_attention_mask_that_is_not_an_interval_is_reported():
    q = torch.randn(1, 2, 3, 16).bfloat16()
    mask = torch.tensor([[True, False, True, True]] * 3)[None, None]      # a hole: not one interval
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        with deterministic() as mode:
            torch.nn.functional.scaled_dot_product_attention(q, torch.randn(1, 2, 4, 16).bfloat16(),
                                                             torch.randn(1, 2, 4, 16).bfloat16(), attn_mask=mask)
        summary = mode.summary()
    assert not summary["deterministic"]
    assert any(issubclass(w.category, DeterminismWarning) and "interval" in str(w.message) for w in got)


def test_audit_names_reducing_ops_the_mode_does_not_replace():
    ln = torch.nn.LayerNorm(16)
    x = torch.randn(2, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeterminismWarning)
        with deterministic() as mode, torch.no_grad():
            _, bad = audit(lambda: (ln(x), torch.cumsum(x, 0), x.bfloat16() @ x.bfloat16().T))
    assert "native_layer_norm" in bad and "cumsum" in bad and "mm" not in bad
    assert not mode.summary()["deterministic"]
    # rotary's positions x inv_freq product has a contraction of length 1, and integer sums (the engine
    # wrapper's logit checksums) are exact in any order: neither is flagged
    _, bad = audit(lambda: (torch.randn(1, 4, 1) @ torch.randn(1, 1, 6), torch.arange(10).sum(-1)))
    assert bad == {}


def test_attribute_cli_deterministic_batch_change_has_no_drift(tmp_path, capsys):
    """`python -m llm.attribute --deterministic`: the tiny model's bf16 logits in a batch of 3 equal batch 1's."""
    from llm.attribute import main
    from probes.report import load_report
    out = tmp_path / "a.json"
    rc = main(["--device", "cpu", "--model", "mistral-tiny", "--reference", "dtype=bfloat16",
               "--variant", "dtype=bfloat16,batch=3", "--units", "none", "--gen-steps", "0", "--no-local",
               "--prompt", "I enjoy walking in the", "--deterministic", "--json", str(out)])
    assert rc == 0
    rep = load_report(out)
    assert rep["config"]["mode"]["deterministic"] and rep["config"]["mode"]["calls"]["mm"] > 0
    drift = {e["key"]: e for e in rep["experiments"]}["llm/prompt/drift"]["metrics"]
    assert drift["max_dlogit"] == 0 and drift["top1_flips"] == 0
    assert "every op covered" in capsys.readouterr().out


def test_matmul_choice_is_checked_and_cublaslt_needs_a_cuda_build():
    with pytest.raises(UsageError, match="matmul='bogus'.*not one of auto, triton, cublaslt"):
        with deterministic(matmul="bogus"):
            pass
    from probes import ext
    if ext.available() and ext.built_with_cuda() and ext.gemm_build_info()["available"]:
        # a CUDA build on a machine without a GPU: CPU tensors are not covered, and the mode says so
        x = torch.randn(3, 8).to(torch.bfloat16)
        with pytest.warns(DeterminismWarning, match="matmul=cublaslt on cpu tensors"):
            with mode_context("deterministic-cublaslt") as det:
                y = x @ x.t()
        assert y.shape == (3, 3) and not det.summary()["deterministic"]
        assert det.summary()["matmul"] == "cublaslt"
    else:
        with pytest.raises(UsageError, match="matmul='triton' runs here"):
            with mode_context("deterministic-cublaslt"):
                pass
    with pytest.raises(UsageError, match="deterministic-cublaslt"):
        with mode_context("bogus"):
            pass


def test_auto_matmul_is_the_triton_route_on_cpu_tensors_and_says_so():
    """matmul='auto' (the mode's default): CPU tensors take the Triton batch-invariant kernel (cuBLASLt needs CUDA
    tensors); summary()['matmul_routes'] counts the route of every mm, and the bits are the Triton route's."""
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    w = torch.randn(32, 64, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    with deterministic() as auto:
        a = torch.nn.functional.linear(x, w)
    with mode_context("deterministic-triton") as tri:
        b = torch.nn.functional.linear(x, w)
    sa, st = auto.summary(), tri.summary()
    assert sa["matmul"] == "auto" and st["matmul"] == "triton" and sa["deterministic"] and st["deterministic"]
    assert sa["matmul_routes"] == {"triton": 1} == st["matmul_routes"]
    assert torch.equal(a.view(torch.int16), b.view(torch.int16))
    names = {"deterministic": ("auto", "rows"), "deterministic-triton-tiled": ("triton", "tiled"),
             "deterministic-tiled": ("auto", "tiled")}
    for name, (matmul, attention) in names.items():
        with mode_context(name) as m:
            assert (m.matmul, m.attention) == (matmul, attention), name


def test_tiled_attention_mode_serves_copies_equal_alone_and_equal_to_the_row_kernel(tiny_bf16):
    """deterministic-tiled: the engine's packed attention through the tiled split kernel. Every copy equals the
    prompt decoded alone, and the completions and logit checksums are those of the row kernel (the same per-row
    order), in Triton's interpreter."""
    rows_res, _, _ = _serve(tiny_bf16, "deterministic")
    tiled_res, det, run = _serve(tiny_bf16, "deterministic-tiled")
    s = det.summary()
    assert s["deterministic"] and s["attention"] == "tiled" and s["calls"]["scaled_dot_product_attention"] > 0
    assert tiled_res["copies_logits_equal_alone"] == tiled_res["copies"] == 2 and tiled_res["n_distinct"] == 1
    assert tiled_res["alone_checksums"] == rows_res["alone_checksums"]
    assert tiled_res["modal_tokens"] == rows_res["modal_tokens"]
