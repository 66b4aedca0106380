"""The operation map: every floating-point operation of a llama/mistral/mixtral decoder, named and tapped.

Per decoder layer (in execution order)::

    input_norm, q_proj, k_proj, v_proj, rotary, attn_core, o_proj, attn_residual,
    post_attn_norm, gate_proj, up_proj, act_mul, down_proj, mlp_residual

then `final_norm` and `lm_head`. A mixture-of-experts layer (Mixtral) has `router` and `experts` in place of
the gated MLP's five ops (MOE_LAYER_OPS): `router` the router's linear (its logits [batch, position,
n_experts]), `experts` the routing rule (probes.moe.routing: the model's own top-k, or a per-batch expert
capacity, `OpMap.router`) and the experts' MLPs weighted and summed (as transformers' eager experts do).
Residual adds, the rotary embedding and act(gate)*up are not modules, so `install(model)` replaces, at run
time and on the instances only, the forward of every decoder layer (which then does the attention and the
MLP itself) and of the final norm and lm_head with equivalent code in which each operation is one call ``tap(layer, op, fn, *inputs)``. The default tap just returns
``fn(*inputs)``: the installed model gives the same bits as the original (tests/test_llm_opmap.py).
Taps that record, patch or replace operations live in llm/attribute.py and llm/runconfig.py.

Tensor layout convention of every op output: [batch, position, ...] (rotary returns (q, k) as
[batch, position, heads, head_dim] views), so one (row, position range) selects a prompt in any op.
"""
from __future__ import annotations

import types

import torch

__all__ = ["LAYER_OPS", "MOE_LAYER_OPS", "FINAL_OPS", "MoEExperts", "RouterLinear", "is_moe", "OP_CLASS", "Site",
           "site_label", "parse_site", "all_sites", "OpMap", "install", "plain_tap", "rotary", "residual_add", "ActMul"]

LAYER_OPS = ("input_norm", "q_proj", "k_proj", "v_proj", "rotary", "attn_core", "o_proj", "attn_residual",
             "post_attn_norm", "gate_proj", "up_proj", "act_mul", "down_proj", "mlp_residual")
MOE_LAYER_OPS = ("input_norm", "q_proj", "k_proj", "v_proj", "rotary", "attn_core", "o_proj", "attn_residual",
                 "post_attn_norm", "router", "experts", "mlp_residual")
FINAL_OPS = ("final_norm", "lm_head")
OP_CLASS = {"input_norm": "norm", "post_attn_norm": "norm", "final_norm": "norm",
            "q_proj": "linear", "k_proj": "linear", "v_proj": "linear", "o_proj": "linear",
            "gate_proj": "linear", "up_proj": "linear", "down_proj": "linear", "lm_head": "linear",
            "rotary": "rotary", "attn_core": "attention", "attn_residual": "residual",
            "mlp_residual": "residual", "act_mul": "activation", "router": "linear", "experts": "experts"}

Site = tuple  # (layer, op); layer == n_layers for the final ops


def site_label(site, n_layers: int) -> str:
    layer, op = site
    return f"final.{op}" if layer >= n_layers else f"L{layer}.{op}"


def parse_site(label: str, n_layers: int):
    head, _, op = label.partition(".")
    if head == "final":
        return (n_layers, op)
    return (int(head[1:]), op)


def all_sites(n_layers: int, layer_ops=LAYER_OPS):
    """Every tapped site of a model with `n_layers` decoder layers of ops `layer_ops`, in execution order."""
    return [(i, op) for i in range(n_layers) for op in layer_ops] + [(n_layers, op) for op in FINAL_OPS]


def is_moe(model) -> bool:
    """Whether the model's decoder layers are mixture-of-experts layers (a router and experts)."""
    mlp = model.model.layers[0].mlp
    return hasattr(mlp, "experts") and hasattr(mlp, "gate")


def plain_tap(layer, op, fn, *inputs):
    return fn(*inputs)


def _rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rotary(q, k, cos, sin):
    """HF apply_rotary_pos_emb on [B,H,T,D] views; in and out as [B,T,H,D] (views, no copies)."""
    qh, kh = q.transpose(1, 2), k.transpose(1, 2)
    c, s = cos.unsqueeze(1), sin.unsqueeze(1)
    q_embed = (qh * c) + (_rotate_half(qh) * s)
    k_embed = (kh * c) + (_rotate_half(kh) * s)
    return q_embed.transpose(1, 2), k_embed.transpose(1, 2)


def residual_add(a, b):
    """A residual add as an op of its own (so that it can be tapped and replayed)."""
    return a + b


class OpMap:
    """Installed op taps of one model. `tap` is swapped by the runs (see llm.attribute)."""

    def __init__(self, model):
        self.model = model
        self.layers = list(model.model.layers)
        self.n_layers = len(self.layers)
        self.tap = plain_tap
        self.moe = is_moe(model)
        self.layer_ops = MOE_LAYER_OPS if self.moe else LAYER_OPS
        # MoE state a run sets around its forward: the routing rule (probes.moe.routing.RouterSpec; None: the
        # model's own top-k), which tokens count ([batch, position] bool; None: all), and a list that collects
        # (layer, Routing) of every experts op (None: not collected)
        self.router = None
        self.token_mask = None
        self.routing_log = None
        self._patched = []
        for i, layer in enumerate(self.layers):
            self._set_forward(layer, types.MethodType(self._make_layer_forward(i), layer))
        norm, head = model.model.norm, model.lm_head
        L = self.n_layers
        norm_call, head_call = type(norm).forward.__get__(norm), type(head).forward.__get__(head)
        self._set_forward(norm, lambda x: self.tap(L, "final_norm", norm_call, x))
        head_op = _LinearCall(head, head_call)
        self._set_forward(head, lambda x: self.tap(L, "lm_head", head_op, x))

    def sites(self):
        return all_sites(self.n_layers, self.layer_ops)

    def label(self, site):
        return site_label(site, self.n_layers)

    def _set_forward(self, module, fwd):
        module.forward = fwd
        self._patched.append(module)

    def remove(self):
        for m in self._patched:
            del m.forward
        self._patched = []
        if getattr(self.model, "_driftscope_opmap", None) is self:
            del self.model._driftscope_opmap

    def _make_layer_forward(self, i):
        opmap = self

        def forward(layer, hidden_states, attention_mask=None, position_ids=None, past_key_values=None,
                    use_cache=False, position_embeddings=None, **kwargs):
            tap = opmap.tap
            attn, mlp = layer.self_attn, layer.mlp
            residual = hidden_states
            h = tap(i, "input_norm", layer.input_layernorm, hidden_states)
            input_shape = h.shape[:-1]
            hidden_shape = (*input_shape, -1, attn.head_dim)
            q = tap(i, "q_proj", attn.q_proj, h).view(hidden_shape)
            k = tap(i, "k_proj", attn.k_proj, h).view(hidden_shape)
            v = tap(i, "v_proj", attn.v_proj, h).view(hidden_shape)
            cos, sin = position_embeddings
            q, k = tap(i, "rotary", rotary, q, k, cos, sin)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
            if past_key_values is not None:
                k, v = past_key_values.update(k, v, attn.layer_idx)

            def attn_core(q, k, v, attention=None):
                """attention: another function with the interface's signature (llm.faults' eager
                attention with a step in lower precision); None: the configured implementation."""
                from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
                from transformers.models.llama.modeling_llama import eager_attention_forward
                iface = attention or ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation,
                                                                           eager_attention_forward)
                out, _ = iface(attn, q, k, v, attention_mask, dropout=0.0, scaling=attn.scaling,
                               sliding_window=getattr(attn.config, "sliding_window", None), **kwargs)
                return out

            a = tap(i, "attn_core", attn_core, q, k, v)
            a = a.reshape(*input_shape, -1).contiguous()
            a = tap(i, "o_proj", attn.o_proj, a)
            h = tap(i, "attn_residual", residual_add, residual, a)
            residual = h
            h = tap(i, "post_attn_norm", layer.post_attention_layernorm, h)
            if opmap.moe:
                logits = tap(i, "router", RouterLinear(mlp.gate), h)
                e = tap(i, "experts", MoEExperts(mlp, i, opmap), h, logits)
                return tap(i, "mlp_residual", residual_add, residual, e)
            g = tap(i, "gate_proj", mlp.gate_proj, h)
            u = tap(i, "up_proj", mlp.up_proj, h)
            au = tap(i, "act_mul", ActMul(mlp.act_fn), g, u)
            d = tap(i, "down_proj", mlp.down_proj, au)
            return tap(i, "mlp_residual", residual_add, residual, d)

        return forward


class ActMul:
    """act(gate) * up of a gated MLP, as an op of its own."""

    def __init__(self, act):
        self.act = act

    def __call__(self, g, u):
        return self.act(g) * u


class RouterLinear:
    """The router's linear (transformers' MixtralTopKRouter: F.linear(h, W), no bias), exposing .weight/.bias
    like an nn.Linear (so linear= replacements apply to it). Output [batch, position, n_experts]."""

    def __init__(self, gate):
        self.weight, self.bias = gate.weight, None

    def __call__(self, h):
        return torch.nn.functional.linear(h, self.weight)


class MoEExperts:
    """The experts op of layer `layer`: route (probes.moe.routing, by the OpMap's `router`, over its
    `token_mask`), then each expert hit, in expert order, on its tokens (slot-major, as transformers' eager
    MixtralExperts: gate_up linear, act(gate) * up, down linear, times the slot's weight, index_add_).
    A dropped slot adds nothing; a token whose every slot was dropped gets 0 (its residual alone)."""

    def __init__(self, mlp, layer, opmap):
        self.mlp, self.layer, self.opmap = mlp, layer, opmap

    def __call__(self, h, logits):
        from probes.moe.routing import RouterSpec, route
        experts = self.mlp.experts
        E, k = experts.num_experts, self.mlp.gate.top_k
        shape = h.shape
        x = h.reshape(-1, shape[-1])
        mask = self.opmap.token_mask
        r = route(logits.reshape(-1, E), k, self.opmap.router or RouterSpec(),
                  None if mask is None else mask.reshape(-1))
        if self.opmap.routing_log is not None:
            self.opmap.routing_log.append((self.layer, r))
        out = torch.zeros_like(x)
        with torch.no_grad():       # the experts hit, ascending (no integer sum: llm.deterministic's audit flags it)
            hit_mask = torch.nn.functional.one_hot(r.indices, num_classes=E + 1).permute(2, 1, 0)
            hit = torch.unique(r.indices)
        for e in hit:
            if e == E:
                continue
            pos, tok = torch.where(hit_mask[e])
            gate, up = torch.nn.functional.linear(x[tok], experts.gate_up_proj[e]).chunk(2, dim=-1)
            y = torch.nn.functional.linear(experts.act_fn(gate) * up, experts.down_proj[e])
            y = y * r.weights[tok, pos, None]
            out.index_add_(0, tok, y.to(out.dtype))
        return out.reshape(shape)


class _LinearCall:
    """lm_head's original forward, exposing .weight/.bias like an nn.Linear (for linear replacements)."""

    def __init__(self, module, call):
        self.module, self.call = module, call
        self.weight, self.bias = module.weight, module.bias

    def __call__(self, x):
        return self.call(x)


def install(model) -> OpMap:
    """Install the op taps on `model` (once; later calls return the same OpMap)."""
    existing = getattr(model, "_driftscope_opmap", None)
    if existing is not None:
        return existing
    mt = getattr(model.config, "model_type", "")
    if mt not in ("llama", "mistral", "mixtral"):
        from probes.errors import UsageError
        raise UsageError(f"the op map knows llama/mistral/mixtral decoder layers, not {mt!r}")
    om = OpMap(model)
    object.__setattr__(model, "_driftscope_opmap", om)
    return om
