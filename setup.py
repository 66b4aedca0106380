"""Build of the probes._C extension through CMake (see CMakeLists.txt).

    pip install --no-build-isolation --no-deps -e .      # editable: probes/_C*.so lands next to probes/
    DRIFTSCOPE_NO_CUDA=1 pip install ...                 # CPU reference only
    DRIFTSCOPE_CUDA_ARCHS="80-real;90" pip install ...   # CUDA architectures (CMake syntax)

The CMake build tree is kept under build/cmake-<key> (key: Python, pybind11, CUDA choice) so that rebuilds
are incremental. DRIFTSCOPE_BUILD_JOBS sets the parallel jobs (default: CPU count).

build_py also writes probes/build_info.py into the built package (not into the source tree; git ignores it
there): the commit the build came from, so that a report written by an installed wheel still names its code
(probes.report.code_identity).
"""
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str, source_dir: Path = ROOT):
        super().__init__(name, sources=[])
        self.source_dir = Path(source_dir)


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        if not isinstance(ext, CMakeExtension):
            return super().build_extension(ext)
        import pybind11

        start = time.monotonic()
        output = Path(self.get_ext_fullpath(ext.name)).resolve()
        output.parent.mkdir(parents=True, exist_ok=True)
        no_cuda = os.environ.get("DRIFTSCOPE_NO_CUDA", "") not in ("", "0")
        key = "|".join([sys.executable, sysconfig.get_config_var("EXT_SUFFIX") or "", pybind11.get_cmake_dir(),
                        str(no_cuda), os.environ.get("DRIFTSCOPE_CUDA_ARCHS", "")])
        build_dir = Path(os.environ.get("DRIFTSCOPE_BUILD_DIR") or
                         ROOT / "build" / f"cmake-{hashlib.sha1(key.encode()).hexdigest()[:12]}")
        build_dir.mkdir(parents=True, exist_ok=True)

        cmake = _find_cmake()
        args = [
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DDRIFTSCOPE_OUTPUT_DIR={output.parent}",
            f"-DDRIFTSCOPE_NO_CUDA={'ON' if no_cuda else 'OFF'}",
        ]
        if not (build_dir / "CMakeCache.txt").exists() and (shutil.which("ninja") or _ninja_from_pip()):
            args += ["-G", "Ninja"]
            if not shutil.which("ninja"):
                args += [f"-DCMAKE_MAKE_PROGRAM={_ninja_from_pip()}"]
        jobs = os.environ.get("DRIFTSCOPE_BUILD_JOBS") or str(os.cpu_count() or 2)
        subprocess.run([cmake, "-S", str(ext.source_dir), "-B", str(build_dir), *args], check=True)
        subprocess.run([cmake, "--build", str(build_dir), "--config", "Release", "-j", jobs], check=True)

        built = output.parent / output.name
        if not built.exists():
            raise RuntimeError(f"CMake did not produce {built}")
        elapsed = time.monotonic() - start
        msg = f"driftscope: built {ext.name} in {elapsed:.1f} s ({build_dir})"
        print(msg, flush=True)
        sys.stderr.write(msg + "\n")


class BuildPyWithCommit(build_py):
    """build_py, then probes/build_info.py in the build folder: COMMIT, DIRTY (tracked files changed) and REASON
    (probes/provenance.py, loaded by path: the build environment need not have numpy)."""

    def run(self):
        super().run()
        if self.dry_run:
            return
        spec = importlib.util.spec_from_file_location("driftscope_provenance", ROOT / "probes" / "provenance.py")
        provenance = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(provenance)
        provenance.write_record(Path(self.build_lib) / "probes" / "build_info.py", ROOT)


def _find_cmake():
    """cmake >= 3.26: the PyPI cmake package of this interpreter first (a system cmake, e.g. Debian's 3.25
    in /usr/bin, is often older), then the one on PATH if it is new enough."""
    try:
        import cmake as cmake_pkg  # the PyPI cmake package
        path = Path(cmake_pkg.CMAKE_BIN_DIR) / "cmake"
        if path.exists():
            return str(path)
    except ImportError:
        pass
    on_path = shutil.which("cmake")
    if on_path:
        out = subprocess.run([on_path, "--version"], capture_output=True, text=True).stdout.split()
        version = tuple(int(p) for p in out[2].split(".")[:2]) if len(out) > 2 else (0, 0)
        if version >= (3, 26):
            return on_path
        raise RuntimeError(f"{on_path} is cmake {out[2]}; probes._C needs cmake >= 3.26 (pip install cmake)")
    raise RuntimeError("cmake >= 3.26 is needed to build probes._C (pip install cmake)")


def _ninja_from_pip():
    try:
        import ninja
        path = Path(ninja.BIN_DIR) / "ninja"
        return str(path) if path.exists() else None
    except ImportError:
        return None


setup(
    ext_modules=[CMakeExtension("probes._C")],
    cmdclass={"build_ext": CMakeBuild, "build_py": BuildPyWithCommit},
)
