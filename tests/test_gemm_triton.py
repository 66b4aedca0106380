"""The batch-invariant Triton matmul on the CPU, through Triton's interpreter (conftest sets it)."""
import os

import pytest
import torch

from probes.ext import KernelInputError

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") in ("", "0"),
                                reason="GPU machine: tests/test_gemm_gpu.py runs the kernel there")

from probes.gemm import triton_matmul as T  # noqa: E402
from probes.gemm.triton_configs import all_candidates  # noqa: E402


def _inputs(m, n, k, dtype=torch.float16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn((m, k), generator=g).to(dtype),
            (torch.randn((n, k), generator=g) * k ** -0.5).to(dtype))


def test_close_to_float32_accumulated_reference():
    x, w = _inputs(37, 40, 72)
    y = T.batch_invariant_matmul(x, w)
    ref = T.reference(x, w)
    assert y.shape == (37, 40) and y.dtype == torch.float16
    # fp16 output: at most a couple of fp16 ulps from the float64 product (accumulation in fp32)
    tol = (ref.abs() * 2.0 ** -10 * 2 + 2.0 ** -24)
    assert bool(((y.float() - ref).abs() <= tol).all())


def test_row0_bitwise_invariant_over_m():
    x, w = _inputs(35, 24, 40, seed=3)
    first = T.batch_invariant_matmul(x[:1], w)[0].view(torch.int16)
    for m in (2, 15, 16, 17, 33, 35):
        assert torch.equal(T.batch_invariant_matmul(x[:m], w)[0].view(torch.int16), first), m
    # every row, not just row 0: row i of X[:m] equals row i of X[:35]
    full = T.batch_invariant_matmul(x, w).view(torch.int16)
    assert torch.equal(T.batch_invariant_matmul(x[:20], w).view(torch.int16), full[:20])


def test_tma_and_pointer_kernels_agree():
    x, w = _inputs(19, 32, 48, seed=5)
    c = dict(T.INTERPRETER_CONFIG, impl="tma")
    assert torch.equal(T.batch_invariant_matmul(x, w, config=c).view(torch.int16),
                       T.batch_invariant_matmul(x, w).view(torch.int16))


def test_k_tail_and_repeat():
    x, w = _inputs(9, 20, 37, seed=7)  # K not a multiple of BLOCK_K, N not of BLOCK_N
    a = T.batch_invariant_matmul(x, w)
    b = T.batch_invariant_matmul(x, w)
    assert torch.equal(a.view(torch.int16), b.view(torch.int16))
    assert float((a.float() - T.reference(x, w)).abs().max()) < 1e-2


def test_swap_kernel_agrees_with_the_others():
    """The small-M kernel (Y^T = W X^T) computes the same products in the same k order."""
    x, w = _inputs(21, 48, 40, seed=9)
    swap = dict(T.INTERPRETER_CONFIG, impl="swap")
    ref = T.batch_invariant_matmul(x, w)
    assert torch.equal(T.batch_invariant_matmul(x, w, config=swap).view(torch.int16), ref.view(torch.int16))
    sub = dict(T.INTERPRETER_CONFIG, impl="tma", SUBTILE=True)
    assert torch.equal(T.batch_invariant_matmul(x, w, config=sub).view(torch.int16), ref.view(torch.int16))


def test_bad_inputs():
    x, w = _inputs(4, 8, 16)
    with pytest.raises(KernelInputError, match="K differs"):
        T.batch_invariant_matmul(x, w[:, :8].contiguous())
    with pytest.raises(KernelInputError, match="dtype"):
        T.batch_invariant_matmul(x.float(), w.float())
    with pytest.raises(KernelInputError, match="dtype mismatch"):
        T.batch_invariant_matmul(x, w.to(torch.bfloat16))
    with pytest.raises(KernelInputError, match="contiguous"):
        T.batch_invariant_matmul(x.t(), w[:, :4])
    with pytest.raises(KernelInputError, match="empty"):
        T.batch_invariant_matmul(x[:0], w)
    with pytest.raises(KernelInputError, match="2-D"):
        T.batch_invariant_matmul(x[0], w)
    with pytest.raises(KernelInputError, match="out"):
        T.batch_invariant_matmul(x, w, out=torch.empty((3, 8), dtype=torch.float16))


def test_every_candidate_compiles_for_sm90_to_wgmma_and_tma():
    """Triton compiles every GPU candidate for sm_90 without a GPU: wgmma (never mma.sync), TMA, shared
    memory within 227 KiB (compile_check exits 1 otherwise); bfloat16 for all, float16 for the anchor."""
    import subprocess
    import sys
    env = dict(os.environ, TRITON_INTERPRET="0")
    for args in (["--all", "--dtypes", "bfloat16"], ["--dtypes", "float16"]):
        r = subprocess.run([sys.executable, "-m", "probes.gemm.compile_check", *args], env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        lines = [line for line in r.stdout.splitlines() if line.startswith("OK")]
        assert lines and all("wgmma=0" not in line and "tma=0" not in line for line in lines), r.stdout
    assert len(lines) == 1 and len(all_candidates()) >= 15


def test_bfloat16_through_the_interpreter_is_the_k_ordered_float32_sum():
    """Triton 3.6's interpreter multiplies bf16 tl.dot operands as raw uint16 bits (values ~1e11);
    batch_invariant_matmul patches its dot: exact float32 products summed in k order."""
    import numpy as np
    import torch

    from probes.gemm.triton_matmul import INTERPRETED, batch_invariant_matmul
    if not INTERPRETED:
        pytest.skip("GPU run: the interpreter is not used")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 64, generator=g).to(torch.bfloat16)
    w = torch.randn(32, 64, generator=g).to(torch.bfloat16)
    y = batch_invariant_matmul(x, w).float().numpy()
    xs, ws = x.float().numpy(), w.float().numpy()
    acc = np.zeros((5, 32), np.float32)
    for k in range(64):
        acc += xs[:, k:k + 1] * ws[:, k][None, :]
    # the output is the float32 sum cast to bf16 (the interpreter's cast truncates): within 2^-7 relative
    assert np.abs(y - acc).max() <= np.abs(acc).max() * 2 ** -7, (y, acc)


HANDOFF = dict(T.INTERPRETER_CONFIG, impl="handoff")


@pytest.mark.parametrize("m, n, k", [(37, 40, 72),   # 9 tiles on 4 programs: one whole wave, then 5 tiles cut
                                     (16, 32, 80),   # 2 tiles on 4 programs: a chain over 3 programs
                                     (50, 48, 160),  # 12 tiles: whole waves only
                                     (5, 16, 16)])   # one tile of one k-tile: programs with nothing to do
def test_handoff_kernel_gives_the_one_program_bits(m, n, k):
    """Tiles cut between programs (the float32 accumulator handed on mid-chain) give the same bits as the
    tile summed by one program: the chain is the same, only run by two programs."""
    x, w = _inputs(m, n, k, seed=m)
    ref = T.batch_invariant_matmul(x, w).view(torch.int16)
    for sub in (False, True):
        y = T.batch_invariant_matmul(x, w, config=dict(HANDOFF, SUBTILE=sub))
        assert torch.equal(y.view(torch.int16), ref), (m, n, k, sub)


def test_handoff_chain_is_the_k_order_not_a_split_sum(monkeypatch):
    """The test above can fail: starting the second program's part from zero and adding the two parts at the
    end (split-K) gives other bits for a cut tile, and so does forgetting the handed-over part."""
    x, w = _inputs(16, 32, 80, seed=16)
    ref = T.batch_invariant_matmul(x, w).view(torch.int16)
    ws, flags, epoch = T.handoff_workspace(x.device, 16, 16, 4)
    before = epoch
    y = T.batch_invariant_matmul(x, w, config=HANDOFF)
    assert torch.equal(y.view(torch.int16), ref)
    assert T.handoff_workspace(x.device, 16, 16, 4)[2] == before + 2  # that launch had its own epoch
    assert int(flags.abs().max()) == 0    # every flag raised was lowered by its consumer (CUDA-graph safe)
    # split-K over the same cuts: each part from zero, summed at the end in float32
    parts = [T.batch_invariant_matmul(x[:, a:b].contiguous(), w[:, a:b].contiguous()).float()
             for a, b in ((0, 32), (32, 80))]
    assert not torch.equal((parts[0] + parts[1]).to(x.dtype).view(torch.int16), ref)


def test_handoff_workspace_epochs_count_up():
    a = T.handoff_workspace(torch.device("cpu"), 16, 32, 4)
    b = T.handoff_workspace(torch.device("cpu"), 16, 32, 4)
    assert b[0] is a[0] and b[1] is a[1] and b[2] == a[2] + 1
    assert a[0].numel() == 4 * 16 * 32 and a[0].dtype == torch.float32 and a[1].dtype == torch.int32
    assert a[1].numel() == 4 * T.FLAG_STRIDE.value


@pytest.mark.parametrize("parts", [(16, 16), (16, 16, 16), (32, 16)])
def test_wide_kernel_gives_the_one_tile_bits(parts):
    """A tile of 2 or 3 power-of-two parts (48 = 16 + 16 + 16 columns: not a power of two), the last tile
    partly beyond N: the same bits as the plain kernel."""
    x, w = _inputs(37, 104, 72, seed=11)
    ref = T.batch_invariant_matmul(x, w).view(torch.int16)
    c = dict(T.INTERPRETER_CONFIG, impl="wide", BLOCK_N=sum(parts), N_PARTS=list(parts))
    assert torch.equal(T.batch_invariant_matmul(x, w, config=c).view(torch.int16), ref)


def test_wide_config_checks_its_parts():
    from probes.gemm.triton_configs import cfg, config_name
    assert config_name(cfg("wide", 128, 176, 64, parts=(128, 32, 16))).startswith("wide-128x176(128+32+16)x64")
    for parts in [(128, 48), (128, 32, 16, 16), (128, 8), None]:
        with pytest.raises(ValueError, match="parts"):
            cfg("wide", 128, sum(parts or (0,)), 64, parts=parts)


@pytest.mark.parametrize("m, n, k", [(37, 104, 72),   # 6 big tiles (4 programs: 3 rows x 2 columns), then small ones
                                     (50, 200, 48),   # 24 big tiles, the small region's last tile partial
                                     (16, 64, 32)])   # too few big tiles for one wave: every tile small
def test_mixed_kernel_gives_the_one_size_bits(m, n, k):
    """Big tiles over whole waves, small ones for the other columns: the same bits as one tile size."""
    from probes.gemm.triton_mixed import big_columns
    x, w = _inputs(m, n, k, seed=m + 1)
    ref = T.batch_invariant_matmul(x, w).view(torch.int16)
    for sub in (False, True):
        c = dict(T.INTERPRETER_CONFIG, impl="mixed", BLOCK_N=32, N_SMALL=16, SUBTILE=sub)
        assert torch.equal(T.batch_invariant_matmul(x, w, config=c).view(torch.int16), ref), (m, n, k, sub)
    assert big_columns(m, n, 16, 32, 4) == {37: 64, 50: 192, 16: 0}[m]


def test_mixed_big_columns_make_whole_waves():
    from probes.gemm.triton_configs import cfg, config_name
    from probes.gemm.triton_mixed import big_columns
    assert big_columns(1400, 4096, 128, 256, 132) == 3072       # 11 x 12 = 132 big tiles, 11 x 8 small
    assert big_columns(1400, 32000, 128, 256, 132) == 30720     # 10 waves of big tiles
    assert big_columns(1400, 1024, 128, 256, 132) == 0          # 44 big tiles: no whole wave
    assert config_name(cfg("mixed", 128, 256, 64, small=128)).startswith("mixed-128x256/128x64")
    for small in (None, 96, 256, 8):
        with pytest.raises(ValueError, match="small"):
            cfg("mixed", 128, 256, 64, small=small)


def test_fallback_is_recorded_in_every_report_and_printed(monkeypatch, tmp_path, capsys):
    """A config whose launch fails (planted: it raises once) is replaced for the rest of the process by the
    pointer kernel with ANCHOR's tiles: the output is the ANCHOR config's, bit for bit; FALLBACKS and the run
    warnings record it once; a report written afterwards carries it under "warnings"; a CLI ending prints it.
    (tests/test_gemm_gpu.py makes a config really fail to compile on the GPU.)"""
    from probes import cli
    from probes import report as reports
    from probes.gemm import triton_configs as C
    monkeypatch.setattr(C, "CHOICES", {})
    monkeypatch.setattr(T, "FALLBACKS", [])
    monkeypatch.setattr(reports, "RUN_WARNINGS", [])
    # the GPU's choice (CHOICES, else ANCHOR) instead of the interpreter's one config
    monkeypatch.setattr(T, "config_for", lambda n, k, dtype, m, device_type="cuda": C.config_for(n, k, dtype, m))
    launched, real = [], T._launch

    def launch(x, w, c, out):
        launched.append(C.config_name(c))
        if len(launched) == 1:
            raise RuntimeError("planted: out of resource: shared memory")
        return real(x, w, c, out)
    monkeypatch.setattr(T, "_launch", launch)
    fallback = dict(C.ANCHOR, impl="ptr")
    x, w = _inputs(5, 48, 136, dtype=torch.bfloat16, seed=11)         # K: two k-tiles of 64 and a tail
    y = T.batch_invariant_matmul(x, w)
    assert launched == [C.config_name(C.ANCHOR), C.config_name(fallback)]
    assert torch.equal(y.view(torch.int16), T.batch_invariant_matmul(x, w, config=C.ANCHOR).view(torch.int16))
    assert C.CHOICES[(48, 136, "bfloat16")] == [fallback] * len(C.BUCKETS)
    (f,) = T.FALLBACKS
    assert (f["from"], f["to"], f["M"], f["N"], f["K"]) == (C.config_name(C.ANCHOR), C.config_name(fallback), 5, 48, 136)
    assert f["error"] == "RuntimeError: planted: out of resource: shared memory"
    (warning,) = reports.RUN_WARNINGS
    assert warning["kind"] == "triton_fallback" and warning["from"] == f["from"] and "M=5" in warning["message"]
    T.batch_invariant_matmul(x[:2], w)                                  # the fallback from now on, no new record
    assert launched[-1] == C.config_name(fallback) and len(T.FALLBACKS) == len(reports.RUN_WARNINGS) == 1
    path = reports.write_report(reports.new_report("gemm", command=["t"], fingerprint={}, config={}),
                                tmp_path / "r.json")
    assert reports.load_report(path)["warnings"] == [warning]
    capsys.readouterr()
    assert cli.guarded_main(lambda argv: 0, []) == 0
    assert capsys.readouterr().err == f"warning: {warning['message']}\n"


# ---- split-K: K in slices fixed by the shape's table, the float32 partials added in slice order ----------

#: Interpreter tiles of the split tests (fewer interpreted steps than INTERPRETER_CONFIG's 16s).
SPLIT_TILES = dict(T.INTERPRETER_CONFIG, BLOCK_M=32, BLOCK_N=32, BLOCK_K=32)


def _split_model(x, w, split, tie, block_k=SPLIT_TILES["BLOCK_K"]):
    """numerics.matmul's model of the split kernel in the interpreter: per slice (split_k_slices, aligned to
    256) the interpreter's dot (exact products summed in float32 from 0 in k order, per BLOCK_K block, each
    block added to the running sum), the slices' float32 results added in slice order, one cast (the
    interpreter's fp32 -> bf16 cast truncates, fp16 rounds to nearest even)."""
    import numpy as np

    from numerics.formats import cast
    from numerics.matmul import MatmulModel, model_matmul
    fmt = str(x.dtype).replace("torch.", "")
    m = MatmulModel(fmt, block_size=1, extra_bits=None, rounding="nearest_even",
                    promote_every=block_k, split_k=split, split_align=256)
    y = model_matmul(x.double().numpy(), w.double().numpy().T, m)
    return np.asarray(cast(y, fmt, tie)).view(np.uint16)


def _bits(y):
    import numpy as np
    return y.view(torch.int16).numpy().view(np.uint16)


SPLIT_MODES = [dict(impl=impl, SPLIT_INLINE=inline) for impl in ("ptr", "tma", "swap") for inline in (False, True)]


@pytest.mark.parametrize("mode", SPLIT_MODES, ids=lambda m: f"{m['impl']}-{'inline' if m['SPLIT_INLINE'] else 'team'}")
def test_split_k_kernel_is_the_model_of_its_order_bit_for_bit(mode):
    """K = 600 in slices of 256, 256, 88 (split 3): every way to run the split kernel (pointer / TMA /
    swapped operands; one program per tile / a team per tile handing float32 partials over) gives
    numerics.matmul's split-K order bit for bit (fp16; bf16 and split 2 in the next test)."""
    x, w = _inputs(21, 40, 600, seed=3)
    got = _bits(T.batch_invariant_matmul(x, w, config=dict(SPLIT_TILES, SPLIT_K=3, **mode)))
    assert (got == _split_model(x, w, 3, "nearest_even")).all(), mode


def test_split_k_model_bfloat16_split_2_and_the_plain_kernel():
    """bf16, split 2 (slices 512 + 88, two teams of two programs on the interpreter's 4), and the plain
    kernel: the one-chain order (split 1) of the same model."""
    x, w = _inputs(21, 40, 600, dtype=torch.bfloat16, seed=2)
    got = _bits(T.batch_invariant_matmul(x, w, config=dict(SPLIT_TILES, SPLIT_K=2)))
    assert (got == _split_model(x, w, 2, "toward_zero")).all()
    plain = _bits(T.batch_invariant_matmul(x, w, config=SPLIT_TILES))
    assert (plain == _split_model(x, w, 1, "toward_zero")).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_split_k_is_another_sum_than_one_chain(dtype):
    """The test above can fail: on the witness inputs (triton_splitk.witness_inputs) the one-chain kernels
    give 0 and the split kernel (every mode) gives 2^-22 in row 0; a split of 2 (slices 512 + 96) puts the
    2^-30s after the 1 in one slice and loses them too."""
    from probes.gemm.triton_splitk import witness_inputs
    x, w = witness_inputs(dtype)
    assert float(T.batch_invariant_matmul(x, w, config=SPLIT_TILES)[0, 0]) == 0.0
    for mode in SPLIT_MODES:
        y = T.batch_invariant_matmul(x, w, config=dict(SPLIT_TILES, SPLIT_K=3, **mode))
        assert y[0].float().tolist() == [2.0 ** -22] * 8, mode
    assert float(T.batch_invariant_matmul(x, w, config=dict(SPLIT_TILES, SPLIT_K=2))[0, 0]) == 0.0


def test_split_k_rows_do_not_depend_on_m_or_the_config():
    """A split-3 table whose configs change with M (pointer, TMA, swapped; inline or a team per tile) gives
    every row the bits of the largest M's run: the split count and slices are the shape's, not M's."""
    x, w = _inputs(40, 48, 520, seed=13)
    configs = [dict(SPLIT_TILES, SPLIT_K=3, **mode) for mode in SPLIT_MODES]
    full = T.batch_invariant_matmul(x, w, config=configs[0]).view(torch.int16)
    for i, m in enumerate((1, 2, 5, 16, 17, 33, 40)):
        c = configs[i % len(configs)]
        y = T.batch_invariant_matmul(x[:m], w, config=c).view(torch.int16)
        assert torch.equal(y, full[:m]), (m, c)


def test_split_k_team_flags_are_lowered_for_the_next_launch():
    """The team mode's flags are 0 after a launch (a CUDA graph replay starts from the state the last launch
    left), and a second launch on other inputs reuses the slots and gives its own model's bits."""
    from probes.gemm.triton_splitk import splitk_workspace
    c = dict(SPLIT_TILES, SPLIT_K=3, SPLIT_INLINE=False)
    for seed in (1, 2):
        x, w = _inputs(19, 32, 600, seed=seed)
        assert (_bits(T.batch_invariant_matmul(x, w, config=c)) == _split_model(x, w, 3, "nearest_even")).all()
        ws, flags = splitk_workspace(torch.device("cpu"), 0, 0)
        assert flags.numel() >= 2 * 3 * 32 and int(flags.abs().sum()) == 0


def test_split_k_with_short_k_has_fewer_slices():
    """K = 300, split 3: slices of ceil(100 / 256) * 256 = 256, so two slices (256 + 44): the split-3 and
    split-2 configs give the same bits, the model's."""
    from probes.gemm.triton_splitk import slice_len
    assert slice_len(300, 3) == (256, 2) and slice_len(4096, 3) == (1536, 3) and slice_len(14336, 3) == (4864, 3)
    x, w = _inputs(9, 24, 300, seed=4)
    y3 = T.batch_invariant_matmul(x, w, config=dict(SPLIT_TILES, SPLIT_K=3))
    y2 = T.batch_invariant_matmul(x, w, config=dict(SPLIT_TILES, SPLIT_K=2, SPLIT_INLINE=True))
    assert torch.equal(y3.view(torch.int16), y2.view(torch.int16))
    assert (_bits(y3) == _split_model(x, w, 3, "nearest_even")).all()
