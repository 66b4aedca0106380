"""FMA probe kernels on the CPU: the C++ reference (every variant, bit for bit against the exact
models), the Triton interpreter and the Numba simulator (both compute unfused), and bad-input errors."""
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from numerics import fma_programs as fp
from numerics.formats import cast
from probes import ext
from probes.fma import kernels

pytestmark = pytest.mark.skipif(not ext.available(), reason="probes._C is not built")

FORMATS = ("float32", "float16", "bfloat16")
ROOT = Path(__file__).resolve().parent.parent


def bits(x):
    x = np.ascontiguousarray(x)
    return x.view({2: np.uint16, 4: np.uint32}[x.dtype.itemsize])


def inputs(program, fmt, n=96, k=24, seed=0):
    rng = np.random.default_rng([seed, fp.PROGRAMS.index(program), fp.FORMATS.index(fmt)])
    d = lambda shape: cast(rng.uniform(-1, 1, shape), fmt)  # noqa: E731
    return {"dot": lambda: {"a": d((n, k)), "b": d((n, k))},
            "horner": lambda: {"coeffs": d(7), "x": d(n)},
            "axpy": lambda: {"alpha": d(1), "x": d(n), "y": d(n)}}[program]()


ARGS = {"dot": ("a", "b"), "horner": ("coeffs", "x"), "axpy": ("alpha", "x", "y")}


def check_against_model(out, program, ins, fmt, model):
    want = fp.program(program, ins, fmt, model)
    assert out.dtype == want.dtype
    np.testing.assert_array_equal(bits(out), bits(want))


@pytest.mark.parametrize("program", fp.PROGRAMS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variant", kernels.VARIANTS)
def test_cpu_reference_matches_model(program, fmt, variant):
    ins = inputs(program, fmt)
    args = [ins[a] for a in ARGS[program]]
    if variant.startswith("plain") and fmt != "float32":
        with pytest.raises(ext.KernelInputError, match="float32 only"):
            kernels.PROGRAMS[program](*args, variant)
        return
    if variant == "plain_contract" and not kernels.cpu_has_fma():
        with pytest.raises(ext.KernelError, match="no FMA"):
            kernels.PROGRAMS[program](*args, variant)
        return
    out = kernels.PROGRAMS[program](*args, variant)
    check_against_model(out, program, ins, fmt, kernels.PREDICTED[variant])


def test_variants_really_differ_on_cpu():
    # The hand-checked case of test_numerics_fma_programs: (1 + 2^-12)^2 - 1 in float32.
    u = np.float32(1 + 2.0 ** -12)
    a = np.array([[1, u]], np.float32)
    b = np.array([[-1, u]], np.float32)
    fused = np.float32(2.0 ** -11 + 2.0 ** -24)
    unfused = np.float32(2.0 ** -11)
    assert kernels.dot(a, b, "fma")[0] == fused
    assert kernels.dot(a, b, "mul_add")[0] == unfused
    assert kernels.dot(a, b, "plain_nocontract")[0] == unfused
    if kernels.cpu_has_fma():
        assert kernels.dot(a, b, "plain_contract")[0] == fused
    # and on random data the two plain builds of one source disagree somewhere
    ins = inputs("dot", "float32", n=256)
    if kernels.cpu_has_fma():
        c = kernels.dot(ins["a"], ins["b"], "plain_contract")
        n = kernels.dot(ins["a"], ins["b"], "plain_nocontract")
        assert np.count_nonzero(bits(c) != bits(n)) > 0


def test_sixteen_bit_rounding_cases():
    # float16: (1 + 2^-6)^2 - 1 -> fused 2^-5 + 2^-12, unfused 2^-5; bfloat16: (1 + 2^-4)^2 - 1.
    for dt, e in ((np.float16, 6), (ml_dtypes.bfloat16, 4)):
        u = 1 + 2.0 ** -e
        x = np.array([u], dt)
        y = np.array([-1.0], dt)
        alpha = np.array([u], dt)
        assert float(kernels.axpy(alpha, x, y, "fma")[0]) == 2.0 ** (1 - e) + 2.0 ** (-2 * e)
        assert float(kernels.axpy(alpha, x, y, "mul_add")[0]) == 2.0 ** (1 - e)


# ---- Triton interpreter and Numba simulator: NumPy arithmetic, every variant is mul_add ------------

@pytest.mark.cpu_modes
@pytest.mark.parametrize("program", fp.PROGRAMS)
@pytest.mark.parametrize("fmt", ("float32", "float16"))
def test_triton_interpreter_is_unfused(program, fmt):
    import torch
    from probes.fma import triton_fma
    assert triton_fma.interpreted()
    ins = inputs(program, fmt, n=64, k=12)
    for variant in triton_fma.VARIANTS:
        out = triton_fma.PROGRAMS[program](*[torch.from_numpy(ins[a]) for a in ARGS[program]], variant).numpy()
        check_against_model(out, program, ins, fmt, "mul_add")

@pytest.mark.cpu_modes

def test_triton_interpreter_refuses_bfloat16_and_bad_variant():
    import torch
    from probes.fma import triton_fma
    x = torch.ones(4, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="bfloat16"):
        triton_fma.axpy(x[:1], x, x, "fma")
    y = torch.ones(4)
    with pytest.raises(ValueError, match="variant"):
        triton_fma.axpy(y[:1], y, y, "fused")


@pytest.mark.cpu_modes
@pytest.mark.parametrize("program", fp.PROGRAMS)
@pytest.mark.parametrize("fmt", ("float32", "float16"))
def test_numba_simulator_is_unfused(program, fmt):
    from probes.fma import numba_fma
    assert numba_fma.simulated()
    ins = inputs(program, fmt, n=32, k=8)
    for variant in numba_fma.VARIANTS:
        out = numba_fma.PROGRAMS[program](*[ins[a] for a in ARGS[program]], variant)
        check_against_model(np.asarray(out), program, ins, fmt, "mul_add")


def test_numba_refuses_bfloat16():
    from probes.fma import numba_fma
    x = np.ones(4, ml_dtypes.bfloat16)
    with pytest.raises(ValueError, match="bfloat16"):
        numba_fma.axpy(x[:1], x, x, "fma")


# ---- bad input -----------------------------------------------------------------------------------

def test_bad_inputs():
    C = ext.load()
    f = np.ones(8, np.float32)
    out = np.empty(2, np.float32)
    with pytest.raises(ValueError, match="variant"):
        C.fma_dot(f, f, out, "fused")
    with pytest.raises(TypeError, match="dtype"):
        C.fma_dot(f, np.ones(8, np.float16), out, "fma")
    with pytest.raises((TypeError, ValueError), match="float64|dtype"):
        C.fma_dot(np.ones(8), np.ones(8), np.empty(2), "fma")
    with pytest.raises(ValueError, match="contiguous"):
        C.fma_dot(np.ones(16, np.float32)[::2], f, out, "fma")
    with pytest.raises(ValueError, match="empty"):
        C.fma_dot(np.ones(0, np.float32), np.ones(0, np.float32), out, "fma")
    with pytest.raises(ValueError, match="must match"):
        C.fma_dot(f, np.ones(6, np.float32), out, "fma")
    with pytest.raises(ValueError, match="rows x k"):
        C.fma_dot(f, f, np.empty(3, np.float32), "fma")
    with pytest.raises(ValueError, match="alpha"):
        C.fma_axpy(np.ones(2, np.float32), f, f, np.empty(8, np.float32), "fma")
    with pytest.raises(ValueError, match="must match"):
        C.fma_horner(f, f, np.empty(4, np.float32), "fma")
    ro = np.empty(2, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        C.fma_dot(f, f, ro, "fma")
    with pytest.raises(ValueError, match="1-D"):
        C.fma_horner(f, np.ones((2, 2), np.float32), np.empty(4, np.float32), "fma")
    # the Python wrappers turn them into KernelInputError
    with pytest.raises(ext.KernelInputError, match="2-D"):
        kernels.dot(f, f, "fma")
    with pytest.raises(ext.KernelInputError, match="variant"):
        kernels.axpy(f[:1], f, f, "fused")


# ---- the two CUDA builds of one source, read from the compiled objects (no GPU needed) ------------

def _sass_counts(obj):
    import re
    import subprocess
    import triton
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        pytest.skip("no cuobjdump (Triton's copy) to read SASS with")
    # sm_90 only: a build for several architectures also holds e.g. sm_80 code, where a bf16 multiply is an
    # HFMA2.BF16_V2 with a -0 addend (sm_80 has no bf16 HMUL2), which is not a contraction.
    sass = subprocess.run([tool, "-sass", "-arch", "sm_90", obj], capture_output=True, text=True, check=True).stdout
    ops = re.findall(r"\b(FFMA|FMUL|FADD|HFMA2|HMUL2|HADD2)(\.BF16_V2)?\b", sass)
    counts = {}
    for op, bf in ops:
        counts[op + bf] = counts.get(op + bf, 0) + 1
    return counts


def test_cuda_objects_contract_only_with_fmad_true():
    import glob
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    objs = {os.path.basename(p): p for p in glob.glob(os.path.join(root, "build", "cmake-*", "CMakeFiles", "_C.dir",
                                                                  "csrc", "fma", "plain_*.cu.o"))}
    if not ext.load().built_with_cuda() or len(objs) < 2:
        pytest.skip("the CUDA objects of csrc/fma are not in build/ (extension built without CUDA here)")
    on = _sass_counts(objs["plain_contract.cu.o"])
    off = _sass_counts(objs["plain_nocontract.cu.o"])
    # --fmad=true: float, half and bf16 a*b+c are single FMAs; --fmad=false: separate multiply and add.
    assert set(on) == {"FFMA", "HFMA2", "HFMA2.BF16_V2"}, on
    assert set(off) == {"FMUL", "FADD", "HMUL2", "HADD2", "HMUL2.BF16_V2", "HADD2.BF16_V2"}, off


_TRITON_SASS = r'''
import json, os, re, subprocess, tempfile, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from probes.fma import triton_fma as T
dis = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
res = {}
for dt in ("fp32", "fp16", "bf16"):
    for name, use_fma, fusion in (("fma", True, True), ("plain_contract", False, True), ("plain_nocontract", False, False)):
        sig = {"a_ptr": "*" + dt, "b_ptr": "*" + dt, "out_ptr": "*" + dt, "rows": "i32", "K": "constexpr",
               "BLOCK": "constexpr", "USE_FMA": "constexpr"}
        src = ASTSource(T.dot_kernel, signature=sig, constexprs={"K": 64, "BLOCK": 128, "USE_FMA": use_fma})
        k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": fusion})
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(k.asm["cubin"]); f.flush()
            sass = subprocess.run([dis, f.name], capture_output=True, text=True, check=True).stdout
        counts = {}
        for op, sfx in re.findall(r"\b(FFMA|FMUL|FADD|HFMA2|HMUL2|HADD2)((?:\.[A-Z0-9_]+)*)", sass):
            counts[op + sfx] = counts.get(op + sfx, 0) + 1
        res[dt + "/" + name] = counts
print(json.dumps(res))
'''


def test_triton_fusion_option_changes_the_sass():
    # The dot (K = 64) compiled for sm_90 without a GPU (outside the interpreter, in a subprocess) and
    # disassembled: tl.fma and a*b+c with enable_fp_fusion=True are 64 FMAs; with fusion off, 64
    # multiplies and 64 adds. (In the PTX the 16-bit products are paired into mul.f16x2 + add.f16; ptxas
    # fuses them back.) Counts exclude HFMA2.MMA, which ptxas uses for moves.
    import json
    import subprocess
    import sys
    env = dict(os.environ, TRITON_INTERPRET="0")
    r = subprocess.run([sys.executable, "-c", _TRITON_SASS], capture_output=True, text=True, env=env, timeout=240,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr[-2000:]
    ops = json.loads(r.stdout.strip().splitlines()[-1])
    for dt, (fma, mul, add) in (("fp32", ("FFMA", "FMUL", "FADD")), ("fp16", ("HFMA2", "HMUL2", "HADD2")),
                                ("bf16", ("HFMA2.BF16_V2", "HMUL2.BF16_V2", "HADD2.BF16_V2"))):
        for fused in ("fma", "plain_contract"):
            c = ops[f"{dt}/{fused}"]
            assert c.get(fma) == 64 and not c.get(mul) and not c.get(add), (dt, fused, c)
        c = ops[f"{dt}/plain_nocontract"]
        assert c.get(mul) == 64 and c.get(add) == 64 and not c.get(fma), (dt, c)


def _fused_in_dot(flags, tmp_path):
    """Fused multiply-adds in the plain `dot` of csrc/fma/cpu_plain.inc compiled with `flags` (x86 GCC)."""
    src = tmp_path / "plain.cpp"
    src.write_text(f'#define DS_PLAIN_NS probe\n#include "{ROOT / "csrc" / "fma" / "cpu_plain.inc"}"\n')
    obj = tmp_path / "plain.o"
    subprocess.run(["g++", "-O3", "-std=gnu++17", *flags, "-c", str(src), "-o", str(obj)], check=True,
                   capture_output=True, timeout=60)
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(obj)], check=True, capture_output=True,
                         text=True, timeout=60).stdout
    body = dis.split("probe3dotEPKfS2_Pfll>:")[1].split("\n\n")[0]   # the function's own listing
    return len(re.findall(r"\bvfn?m(?:add|sub)\d{3}", body))


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not shutil.which("g++")
                    or not shutil.which("objdump"), reason="x86 GCC and objdump are needed")
def test_contracted_cpu_build_fuses_the_loop_carried_sum(tmp_path):
    """-ffp-contract=fast allows contraction but GCC's "avoid FMA chains" tunings skip it on a loop-carried sum
    (`acc = a * b + acc`): the GPU machine's GCC built a multiply-then-add dot that way (2026-12-05). znver3
    tuning shows the heuristic on any GCC >= 8; the flag CMakeLists.txt adds turns it off."""
    base = ["-ffp-contract=fast", "-fno-lto", "-fno-tree-vectorize", "-mfma", "-mtune=znver3"]
    assert _fused_in_dot(base, tmp_path) == 0                                   # the heuristic at work
    assert _fused_in_dot(base + ["--param=avoid-fma-max-bits=0"], tmp_path) >= 1
    assert "--param=avoid-fma-max-bits=0" in (ROOT / "CMakeLists.txt").read_text()
