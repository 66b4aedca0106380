"""Machine fingerprint: everything about the hardware and software that can change the bits.

    fp = fingerprint("cuda:0")      # or "cpu", "auto"
    fingerprint_summary(fp)         # "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs), driver 580.65, ..."

    python -m probes.device [--device D] [--json PATH]

Layout of the fingerprint (every value JSON-able; anything that could not be read is null, with
the reason in the neighbouring "errors" object, keyed by field name)::

    {"device": "cuda:0" | "cpu",
     "host":     {hostname, os, kernel, machine, python, python_implementation, libc},
     "cpu":      {model, count, usable_count, flags (the ones that matter for floating point),
                  flags_count, errors},
     "gpu":      null | {index, name, compute_capability, sm, sm_count, l2_bytes, memory_bytes,
                  memory_bus_width_bits, clocks_mhz {sm, sm_max, memory, memory_max},
                  power_limit_w, driver_version, cuda_driver_version, cuda_runtime_version,
                  cublas_version, cublaslt_version, cublas_wheel_version (the nvidia-cublas
                  pip wheel torch loads), cudnn_version, pci_bus_id, uuid,
                  mig_mode, persistence_mode, ecc_mode, sources, errors},
     "versions": {numpy, ml_dtypes, torch, torch_cuda, triton, cupy, numba, numba-cuda,
                  transformers, nvidia-ml-py, driftscope, cuda-python, nvcc},
     "env":      {the numerics-relevant environment variables that are set}}

Versions come from importlib.metadata (no heavy imports); torch is imported only when a CUDA
device is fingerprinted. A missing package reads "not installed".
"""
from __future__ import annotations

import argparse
import ast
import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Any, Callable, Mapping, Sequence

from probes.cli import add_common_args, guarded_main, resolve_device

__all__ = ["fingerprint", "fingerprint_summary", "package_versions", "cpu_info", "host_info",
           "gpu_info", "format_fingerprint", "main", "NOT_INSTALLED"]

NOT_INSTALLED = "not installed"

# Distribution names, first installed one wins.
PACKAGES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "ml_dtypes": ("ml_dtypes", "ml-dtypes"),
    "torch": ("torch",),
    "triton": ("triton", "pytorch-triton"),
    "cupy": ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy"),
    "numba": ("numba",),
    "numba-cuda": ("numba-cuda",),
    "transformers": ("transformers",),
    "nvidia-ml-py": ("nvidia-ml-py", "pynvml"),
    "cuda-python": ("cuda-python", "cuda-bindings"),
    "driftscope": ("driftscope",),
}
CUBLAS_WHEELS = ("nvidia-cublas", "nvidia-cublas-cu13", "nvidia-cublas-cu12", "nvidia-cublas-cu11")

# CPU flags that matter for floating-point results (x86 and Arm spellings).
_FLAG_EXACT = {"fma", "fma4", "avx", "avx2", "f16c", "sse2", "sse4_1", "sse4_2", "avx_vnni",
               "avx_vnni_int8", "avx_ne_convert", "avx_ifma", "fp", "asimd", "asimdhp", "fphp",
               "asimddp", "sve", "sve2", "bf16", "i8mm", "svebf16", "sveh"}
_FLAG_PREFIXES = ("avx512", "amx", "avx10")

# Environment variables that change numerical results or which device is used.
ENV_VARS = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUBLAS_WORKSPACE_CONFIG",
            "CUBLASLT_WORKSPACE_SIZE", "NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
            "CUDA_LAUNCH_BLOCKING", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
            "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "NPY_DISABLE_CPU_FEATURES", "ONEDNN_MAX_CPU_ISA",
            "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "TRITON_INTERPRET", "NUMBA_ENABLE_CUDASIM",
            "PYTORCH_CUDA_ALLOC_CONF")


# --------------------------------------------------------------------------------------------
# helpers


def _guard(errors: dict, field: str, fn: Callable[[], Any]) -> Any:
    """fn(), or None with the reason stored in errors[field]."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001  (a fingerprint never crashes)
        errors[field] = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        return None


def _dist_version(names: Sequence[str]) -> str:
    from importlib.metadata import PackageNotFoundError, version
    for name in names:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
        except Exception:  # noqa: BLE001  broken metadata
            continue
    return NOT_INSTALLED


def _torch_cuda_without_import() -> str | None:
    """torch.version.cuda read from torch/version.py, without importing torch."""
    if "torch" in sys.modules:
        return getattr(sys.modules["torch"].version, "cuda", None)
    import importlib.util
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = os.path.join(loc, "version.py")
        try:
            text = open(path, encoding="utf-8").read()
        except OSError:
            continue
        m = re.search(r"^cuda\s*(?::[^=\n]*)?=\s*(.+)$", text, re.M)
        if m:
            try:
                return ast.literal_eval(m.group(1).strip())
            except (ValueError, SyntaxError):
                return None
    return None


def nvcc_version() -> str:
    path = shutil.which("nvcc")
    if path is None:
        for cand in ("/usr/local/cuda/bin/nvcc",):
            if os.access(cand, os.X_OK):
                path = cand
                break
    if path is None:
        return NOT_INSTALLED
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"error: {exc}"
    lines = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()]
    release = [ln for ln in lines if "release" in ln]
    return release[0] if release else (lines[-1] if lines else f"{path} (no version output)")


def package_versions() -> dict:
    versions = {name: _dist_version(dists) for name, dists in PACKAGES.items()}
    if versions["driftscope"] == NOT_INSTALLED:
        from probes.report import driftscope_version
        versions["driftscope"] = driftscope_version()
    if versions["torch"] != NOT_INSTALLED:
        try:
            versions["torch_cuda"] = _torch_cuda_without_import()
        except Exception as exc:  # noqa: BLE001
            versions["torch_cuda"] = f"error: {exc}"
    else:
        versions["torch_cuda"] = NOT_INSTALLED
    versions["cudnn"] = "not checked (torch not imported)"
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            v = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
            versions["cudnn"] = str(v) if v is not None else "not available"
        except Exception as exc:  # noqa: BLE001
            versions["cudnn"] = f"error: {exc}"
    versions["nvcc"] = nvcc_version()
    return versions


# --------------------------------------------------------------------------------------------
# host and CPU


def host_info() -> dict:
    libc = platform.libc_ver()
    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "libc": " ".join(x for x in libc if x) or None,
    }


def _read_cpuinfo() -> str:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
        return f.read()


def cpu_info(cpuinfo_text: str | None = None) -> dict:
    errors: dict[str, str] = {}
    info: dict[str, Any] = {"model": None, "count": os.cpu_count(), "usable_count": None,
                            "flags": [], "flags_count": 0}
    try:
        info["usable_count"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["usable_count"] = os.cpu_count()
    text = cpuinfo_text
    if text is None:
        text = _guard(errors, "cpuinfo", _read_cpuinfo)
    fields: dict[str, str] = {}
    for line in (text or "").splitlines():
        if ":" in line:
            k, _, v = line.partition(":")
            fields.setdefault(k.strip().lower(), v.strip())
    model = fields.get("model name") or fields.get("hardware") or fields.get("cpu model")
    if not model and "cpu implementer" in fields:
        model = f"Arm implementer {fields['cpu implementer']} part {fields.get('cpu part', '?')}"
    info["model"] = model or platform.processor() or None
    if not info["model"]:
        errors["model"] = "not found in /proc/cpuinfo or platform.processor()"
    flags = (fields.get("flags") or fields.get("features") or "").split()
    info["flags_count"] = len(flags)
    info["flags"] = sorted(f for f in set(flags)
                           if f in _FLAG_EXACT or f.startswith(_FLAG_PREFIXES))
    if text is not None and not flags:
        errors["flags"] = "no flags/Features line in /proc/cpuinfo"
    for k, name in (("vendor_id", "vendor_id"), ("cpu family", "family"),
                    ("model", "model_number"), ("stepping", "stepping"),
                    ("microcode", "microcode")):
        if k in fields:
            info[name] = fields[k]
    info["errors"] = errors
    return info


# --------------------------------------------------------------------------------------------
# GPU


def _ext():
    """probes.ext if it is importable and built, else None (with the reason)."""
    try:
        from probes import ext
    except ImportError as exc:
        return None, f"probes.ext not importable ({exc})"
    except Exception as exc:  # noqa: BLE001
        return None, f"probes.ext failed ({type(exc).__name__}: {exc})"
    try:
        if not ext.available():
            return None, "driftscope extension not built"
    except Exception as exc:  # noqa: BLE001
        return None, f"driftscope extension unavailable ({exc})"
    return ext, ""


def _version_str(v: Any) -> str | None:
    """CUDA-style integer versions (13000 -> "13.0", 120803 -> "12.8.3") and strings."""
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        if v >= 100000:  # cuBLAS: major*10000 + minor*100 + patch
            return f"{v // 10000}.{(v // 100) % 100}.{v % 100}"
        if v >= 1000:  # CUDA: major*1000 + minor*10
            return f"{v // 1000}.{(v % 1000) // 10}"
        return str(v)
    return str(v)


def _nvml_str(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _nvml_handle(pynvml, index: int, uuid: str | None):
    """The NVML handle of CUDA device `index`: matched by UUID (CUDA and NVML may order devices
    differently, and CUDA_VISIBLE_DEVICES renumbers them); by index when no UUID is known."""
    if uuid:
        want = uuid.lower().removeprefix("gpu-")
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            got = _nvml_str(pynvml.nvmlDeviceGetUUID(h)).lower().removeprefix("gpu-")
            if got == want:
                return h, "uuid"
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    visible = [x.strip() for x in cvd.split(",") if x.strip()] if cvd else []
    if visible and index < len(visible):
        v = visible[index]
        if v.isdigit():
            return pynvml.nvmlDeviceGetHandleByIndex(int(v)), "CUDA_VISIBLE_DEVICES index"
        return pynvml.nvmlDeviceGetHandleByUUID(v), "CUDA_VISIBLE_DEVICES uuid"
    return pynvml.nvmlDeviceGetHandleByIndex(index), "index (assumes CUDA and NVML order agree)"


def gpu_info(index: int) -> dict:
    errors: dict[str, str] = {}
    sources: dict[str, str] = {}
    g: dict[str, Any] = {
        "index": index, "name": None, "compute_capability": None, "sm": None, "sm_count": None,
        "l2_bytes": None, "memory_bytes": None, "memory_bus_width_bits": None,
        "clocks_mhz": {"sm": None, "sm_max": None, "memory": None, "memory_max": None,
                       "sm_application": None},
        "power_limit_w": None, "driver_version": None, "cuda_driver_version": None,
        "cuda_runtime_version": None, "cublas_version": None, "cublaslt_version": None,
        "cudnn_version": None, "pci_bus_id": None, "uuid": None, "mig_mode": None,
        "persistence_mode": None, "ecc_mode": None, "vbios_version": None,
    }

    def put(field: str, value: Any, source: str) -> None:
        if value is not None and g.get(field) is None:
            g[field] = value
            sources[field] = source
            errors.pop(field, None)

    # torch ------------------------------------------------------------------------------------
    torch = None
    try:
        import torch as _torch
        torch = _torch
    except Exception as exc:  # noqa: BLE001
        errors["torch"] = f"{type(exc).__name__}: {exc}"
    if torch is not None:
        props = _guard(errors, "torch_properties", lambda: torch.cuda.get_device_properties(index))
        if props is not None:
            put("name", getattr(props, "name", None), "torch")
            if getattr(props, "major", None) is not None:
                put("compute_capability", f"{props.major}.{props.minor}", "torch")
            put("sm_count", getattr(props, "multi_processor_count", None), "torch")
            put("l2_bytes", getattr(props, "L2_cache_size", None), "torch")
            put("memory_bytes", getattr(props, "total_memory", None), "torch")
            put("memory_bus_width_bits", getattr(props, "memory_bus_width", None) or None, "torch")
            uuid = getattr(props, "uuid", None)
            put("uuid", str(uuid) if uuid else None, "torch")
        put("cuda_runtime_version", getattr(torch.version, "cuda", None), "torch.version.cuda")
        cudnn = _guard(errors, "cudnn_version", lambda: torch.backends.cudnn.version())
        put("cudnn_version", str(cudnn) if cudnn else None, "torch.backends.cudnn")

    # driftscope extension --------------------------------------------------------------------
    ext, why = _ext()
    if ext is not None:
        info = _guard(errors, "ext_build_info", ext.build_info) or {}
        for field, key in (("cuda_runtime_version", "cuda_runtime_version"),
                           ("cuda_driver_version", "cuda_driver_version"),
                           ("cublas_version", "cublas_version"),
                           ("cublaslt_version", "cublaslt_version")):
            v = info.get(key)
            if v is not None:
                g[field] = _version_str(v)  # the extension's own (linked) versions win
                sources[field] = "ext.build_info"
        p = _guard(errors, "ext_device_properties", lambda: ext.device_properties(index)) or {}
        put("name", p.get("name"), "ext")
        if p.get("major") is not None:
            put("compute_capability", f"{p['major']}.{p.get('minor', 0)}", "ext")
        for field, keys in (("sm_count", ("multiprocessor_count", "multi_processor_count",
                                          "sm_count")),
                            ("l2_bytes", ("l2_cache_size", "l2_size", "L2_cache_size")),
                            ("memory_bytes", ("total_memory", "total_global_mem")),
                            ("memory_bus_width_bits", ("memory_bus_width",)),
                            ("pci_bus_id", ("pci_bus_id",)), ("uuid", ("uuid",))):
            for key in keys:
                if p.get(key) is not None:
                    put(field, p[key], "ext")
                    break
    else:
        sources["ext"] = why

    # NVML ------------------------------------------------------------------------------------
    pynvml = None
    try:
        import pynvml as _pynvml
        _pynvml.nvmlInit()
        pynvml = _pynvml
    except Exception as exc:  # noqa: BLE001  ImportError, NVMLError_LibraryNotFound, ...
        errors["nvml"] = f"{type(exc).__name__}: {exc}"
    if pynvml is not None:
        try:
            found = _guard(errors, "nvml_handle", lambda: _nvml_handle(pynvml, index, g["uuid"]))
            if found is not None:
                h, how = found
                sources["nvml_handle"] = how
                n = pynvml
                put("name", _guard(errors, "name", lambda: _nvml_str(n.nvmlDeviceGetName(h))),
                    "nvml")
                put("driver_version", _guard(errors, "driver_version",
                                             lambda: _nvml_str(n.nvmlSystemGetDriverVersion())),
                    "nvml")
                put("cuda_driver_version", _guard(
                    errors, "cuda_driver_version",
                    lambda: _version_str(n.nvmlSystemGetCudaDriverVersion_v2())), "nvml")
                put("memory_bus_width_bits", _guard(
                    errors, "memory_bus_width_bits", lambda: n.nvmlDeviceGetMemoryBusWidth(h)),
                    "nvml")
                clocks = g["clocks_mhz"]
                for field, fn, kind in (("sm", "nvmlDeviceGetClockInfo", "NVML_CLOCK_SM"),
                                        ("sm_max", "nvmlDeviceGetMaxClockInfo", "NVML_CLOCK_SM"),
                                        ("memory", "nvmlDeviceGetClockInfo", "NVML_CLOCK_MEM"),
                                        ("memory_max", "nvmlDeviceGetMaxClockInfo",
                                         "NVML_CLOCK_MEM"),
                                        ("sm_application", "nvmlDeviceGetApplicationsClock",
                                         "NVML_CLOCK_SM")):
                    clocks[field] = _guard(errors, f"clocks_mhz.{field}",
                                           lambda fn=fn, kind=kind: getattr(n, fn)(
                                               h, getattr(n, kind)))
                put("power_limit_w", _guard(
                    errors, "power_limit_w",
                    lambda: n.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0), "nvml")
                put("pci_bus_id", _guard(errors, "pci_bus_id",
                                         lambda: _nvml_str(n.nvmlDeviceGetPciInfo(h).busId)),
                    "nvml")
                nvml_uuid = _guard(errors, "nvml_uuid", lambda: _nvml_str(n.nvmlDeviceGetUUID(h)))
                if nvml_uuid:
                    g["uuid"] = nvml_uuid
                    sources["uuid"] = "nvml"
                    errors.pop("uuid", None)
                put("mig_mode", _guard(errors, "mig_mode", lambda: _on_off(
                    n.nvmlDeviceGetMigMode(h)[0])), "nvml")
                put("persistence_mode", _guard(errors, "persistence_mode", lambda: _on_off(
                    n.nvmlDeviceGetPersistenceMode(h))), "nvml")
                put("ecc_mode", _guard(errors, "ecc_mode", lambda: _on_off(
                    n.nvmlDeviceGetEccMode(h)[0])), "nvml")
                put("vbios_version", _guard(errors, "vbios_version",
                                            lambda: _nvml_str(n.nvmlDeviceGetVbiosVersion(h))),
                    "nvml")
        finally:
            try:
                pynvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass

    else:
        # Say why for each field only NVML provides, not just once under "nvml".
        nvml_fields = ("driver_version", "cuda_driver_version", "memory_bus_width_bits",
                       "power_limit_w", "pci_bus_id", "mig_mode", "persistence_mode", "ecc_mode",
                       "vbios_version")
        for field in nvml_fields:
            if g[field] is None:
                errors.setdefault(field, f"NVML unavailable ({errors['nvml']})")
        for field, value in g["clocks_mhz"].items():
            if value is None:
                errors.setdefault(f"clocks_mhz.{field}", f"NVML unavailable ({errors['nvml']})")

    # cuBLAS: the pip wheel that torch (and cupy) load may differ from what the extension links.
    wheel = _dist_version(CUBLAS_WHEELS)
    g["cublas_wheel_version"] = None if wheel == NOT_INSTALLED else wheel
    if g["cublas_version"] is None:
        v = wheel
        if v != NOT_INSTALLED:
            g["cublas_version"] = v
            sources["cublas_version"] = "nvidia-cublas wheel"
            if g["cublaslt_version"] is None:  # cuBLASLt ships in the same wheel
                g["cublaslt_version"] = v
                sources["cublaslt_version"] = "nvidia-cublas wheel"
        elif g["cuda_runtime_version"]:
            errors["cublas_version"] = ("unknown: extension not built and no nvidia-cublas wheel; "
                                        f"CUDA toolkit {g['cuda_runtime_version']}")
    if g["compute_capability"]:
        g["sm"] = "sm_" + g["compute_capability"].replace(".", "")
    for field in ("name", "compute_capability", "sm_count", "driver_version"):
        if g[field] is None and field not in errors:
            errors[field] = "no source provided it (torch, driftscope extension and NVML failed)"
    g["sources"] = sources
    g["errors"] = errors
    return g


def _on_off(v: Any) -> str:
    return {0: "off", 1: "on"}.get(v, str(v))


# --------------------------------------------------------------------------------------------
# fingerprint


def _env() -> dict:
    return {k: os.environ[k] for k in ENV_VARS if k in os.environ}


def fingerprint(device: str = "auto") -> dict:
    """Fingerprint of this machine for `device` ("auto", "cpu", "cuda", "cuda:N").

    Raises UsageError/NoGPUError (via resolve_device) for a device that cannot be used; every
    other failure is recorded as null plus a reason."""
    dev = resolve_device(device)
    fp: dict[str, Any] = {"device": dev, "host": host_info(), "cpu": cpu_info(), "gpu": None}
    if dev.startswith("cuda"):
        fp["gpu"] = gpu_info(int(dev.split(":")[1]))
    fp["versions"] = package_versions()
    fp["env"] = _env()
    return fp


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(p)
    return d


def fingerprint_summary(fp: Any) -> str:
    """One line for a fingerprint (also one loaded from an old or foreign report)."""
    if not isinstance(fp, Mapping) or not fp:
        return "unknown machine (no fingerprint)"
    torch_v = _get(fp, "versions", "torch")
    torch_part = f", torch {torch_v}" if torch_v and torch_v != NOT_INSTALLED else ""
    gpu = fp.get("gpu")
    if isinstance(gpu, Mapping):
        bits = []
        if gpu.get("sm"):
            bits.append(str(gpu["sm"]))
        if gpu.get("sm_count"):
            bits.append(f"{gpu['sm_count']} SMs")
        if gpu.get("mig_mode") == "on":
            bits.append("MIG")
        head = str(gpu.get("name") or "unknown GPU") + (f" ({', '.join(bits)})" if bits else "")
        parts = [head]
        if gpu.get("driver_version"):
            parts.append(f"driver {gpu['driver_version']}")
        cuda = gpu.get("cuda_runtime_version") or gpu.get("cuda_driver_version")
        if cuda:
            parts.append(f"CUDA {cuda}")
        return ", ".join(parts) + torch_part
    cpu = fp.get("cpu") if isinstance(fp.get("cpu"), Mapping) else {}
    n = cpu.get("usable_count") or cpu.get("count")
    cores = f" ({n} core{'s' if n != 1 else ''})" if n else ""
    np_v = _get(fp, "versions", "numpy")
    np_part = f", numpy {np_v}" if np_v and np_v != NOT_INSTALLED else ""
    return f"CPU: {cpu.get('model') or 'unknown model'}{cores}{np_part}{torch_part}"


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if isinstance(d, Mapping):
        if not d and prefix:
            rows.append((prefix, "(none)"))
        for k, v in d.items():
            rows.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, list):
        rows.append((prefix, " ".join(str(x) for x in d) if d else "(none)"))
    else:
        rows.append((prefix, "null" if d is None else str(d)))
    return rows


def format_fingerprint(fp: Mapping) -> str:
    """Aligned "key: value" lines, nested keys dotted."""
    rows = _flatten(fp)
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m probes.device",
        description="Print this machine's fingerprint: GPU, driver, CUDA, cuBLAS, CPU, OS and "
                    "library versions - everything that can change floating-point results.")
    add_common_args(parser, json_help="also write the fingerprint as JSON to PATH")
    args = parser.parse_args(argv)
    fp = fingerprint(args.device)
    print(fingerprint_summary(fp))
    print()
    print(format_fingerprint(fp))
    if args.json:
        from probes.report import jsonable, write_json
        path = write_json(jsonable(fp), args.json)
        print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(guarded_main(main))
