"""Which Hugging Face class a model is, and `config.json` both ways, refusing what would differ.

Export (`export_type`, `hf_config`): a dense model is `LlamaForCausalLM`, or `Qwen3ForCausalLM`
with QK-norm (RMSNorm over each head's channels before RoPE, as `Attention` does); a top-k MoE
is `MixtralForCausalLM` (every layer MoE, top-k weights renormalised); with shared experts it is
`Qwen2MoeForCausalLM` (dense layers between MoE layers via `decoder_sparse_step`, the top-k
renormalisation via `norm_topk_prob`); with QK-norm it is `Qwen3MoeForCausalLM`.

Conventions that match without any change of weights, checked in `scaling.models.layers` and in
transformers 5.24: RoPE rotates channel pairs (i, i + H/2) with inverse frequencies
base^(-2i/H) (transformers' `rotate_half`, so no permutation of q/k rows is needed);
RMSNorm multiplies by its weight w (not 1 + w) with eps inside the square root; query head j
reads key/value head j // (N/K) (`repeat_kv`); attention scale 1/sqrt(H); SwiGLU is
silu(x W_gate) * (x W_up); tied embeddings read out through the embedding matrix; the
router is softmax over all experts, top-k, then renormalised (Mixtral; `norm_topk_prob` for
Qwen-MoE), which equals `moe.gating="topk_softmax"` and `softmax_topk` with `renormalize`.

Anything else that changes the function is refused with one line naming it (`cannot export:
...`), and so is a model field this module does not know unless it holds its default: an
exported checkpoint never loads into a class that computes something else.

Import (`model_fields`): the `model.*` fields of a `config.json`, refusing features with no
equivalent here (biases, sliding windows, scaled RoPE, non-SiLU activations). MoE imports are
dropless (`model.moe.dropless=True`), as every HF MoE class is.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from scaling.config import default_config, expert_d_ff, head_dim
from scaling.errors import ScalingError

LLAMA, QWEN3, MIXTRAL, QWEN2_MOE, QWEN3_MOE, MISTRAL = (
    "llama", "qwen3", "mixtral", "qwen2_moe", "qwen3_moe", "mistral")
CLASSES = {LLAMA: "LlamaForCausalLM", QWEN3: "Qwen3ForCausalLM", MIXTRAL: "MixtralForCausalLM",
           QWEN2_MOE: "Qwen2MoeForCausalLM", QWEN3_MOE: "Qwen3MoeForCausalLM"}
IMPORTABLE = (*CLASSES, MISTRAL)  # Mistral: Llama with a sliding window (imported without one)
# transformers' class defaults, for keys a config.json leaves out.
_DEFAULTS = {
    LLAMA: {"rms_norm_eps": 1e-6, "max_position_embeddings": 2048, "rope_theta": 1e4},
    MISTRAL: {"rms_norm_eps": 1e-6, "max_position_embeddings": 131072, "rope_theta": 1e4,
              "sliding_window": 4096},
    MIXTRAL: {"rms_norm_eps": 1e-5, "max_position_embeddings": 131072, "rope_theta": 1e6,
              "num_local_experts": 8, "num_experts_per_tok": 2},
    QWEN3: {"rms_norm_eps": 1e-6, "max_position_embeddings": 32768, "rope_theta": 1e4},
    QWEN2_MOE: {"rms_norm_eps": 1e-6, "max_position_embeddings": 32768, "rope_theta": 1e4,
                "num_experts": 60, "num_experts_per_tok": 4, "moe_intermediate_size": 1408,
                "shared_expert_intermediate_size": 5632},
    QWEN3_MOE: {"rms_norm_eps": 1e-6, "max_position_embeddings": 32768, "rope_theta": 1e4,
                "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768},
}
# Model fields that change how a function is computed, initialised or trained, not which
# function the exported weights compute; and the fields the export maps or refuses by name.
NEUTRAL = frozenset({
    "name", "init_std", "dtype", "param_dtype", "remat", "scan_layers", "attention_impl",
    "init_from", "mup_base_width", "moe.dispatch", "moe.capacity_factor", "moe.router_jitter",
    "moe.load_balance_coef", "moe.router_z_loss_coef"})
MAPPED = frozenset({
    "num_layers", "d_model", "num_heads", "num_kv_heads", "head_dim", "d_ff", "vocab_size",
    "max_len", "mlp", "position", "rope_base", "qk_norm", "tied_embeddings", "logit_softcap",
    "norm_eps", "parametrization", "moe.num_experts", "moe.top_k", "moe.expert_d_ff",
    "moe.num_shared_experts", "moe.eval_capacity_factor", "moe.dropless", "moe.every",
    "moe.gating", "moe.renormalize"})


def flat(d: dict, prefix: str = "") -> dict[str, Any]:
  """{"moe.top_k": 2, ...} of a nested dict."""
  out: dict[str, Any] = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _refuse(feature: str, why: str) -> ScalingError:
  return ScalingError(f"cannot export: {feature} {why}; nothing was written")


def renormalized(m: ml_collections.ConfigDict) -> bool:
  """Whether the kept top-k gate weights sum to 1 (`topk_softmax` always does)."""
  return m.moe.gating == "topk_softmax" or bool(m.moe.renormalize)


def _check_unknown(m: ml_collections.ConfigDict) -> None:
  """Refuses model fields this module does not know, unless they hold their default."""
  defaults = flat(default_config().model.to_dict())
  for key, value in sorted(flat(m.to_dict()).items()):
    if key in NEUTRAL or key in MAPPED:
      continue
    if key not in defaults or defaults[key] != value:
      raise _refuse(f"model.{key}={value!r}", "is a feature the Hugging Face export does not "
                    "know, so it cannot tell whether the HF class would compute the same "
                    "function")


def export_type(m: ml_collections.ConfigDict, *, dropless: bool = False) -> str:
  """The HF `model_type` of `m` (`cfg.model`); ScalingError naming the first feature with no
  equivalent. `dropless`: export a capacity-limited MoE as the dropless function."""
  if m.position != "rope":
    kind = "learned absolute" if m.position == "learned" else "Transformer-XL relative"
    raise _refuse(f"model.position={m.position!r} ({kind} positions)",
                  "has no equivalent in LlamaForCausalLM or the other HF classes, which use "
                  "rotary positions only")
  if m.mlp != "swiglu":
    raise _refuse(f"model.mlp={m.mlp!r} (a GELU MLP)", "has no equivalent in the Llama, "
                  "Qwen and Mixtral classes, which use SwiGLU")
  if m.logit_softcap:
    raise _refuse(f"model.logit_softcap={m.logit_softcap} (logit soft-capping)",
                  "has no equivalent in the Llama, Qwen and Mixtral classes")
  if m.get("parametrization", "sp") != "sp":
    raise _refuse(f"model.parametrization={m.parametrization!r} (muP's 1/head_dim attention "
                  "scale and readout multiplier)", "has no equivalent in the HF classes")
  _check_unknown(m)
  if not m.moe.num_experts:
    kind = QWEN3 if m.qk_norm else LLAMA
  else:
    kind = _moe_type(m, dropless)
  if kind in (LLAMA, MIXTRAL) and m.d_model % m.num_heads:
    raise _refuse(f"model.d_model={m.d_model} with model.num_heads={m.num_heads}",
                  f"cannot be a {CLASSES[kind]}: its config requires d_model divisible by "
                  "the number of heads")
  return kind


def _moe_type(m: ml_collections.ConfigDict, dropless: bool) -> str:
  moe = m.moe
  if not moe.dropless and not dropless:
    raise _refuse("model.moe.dropless=False (capacity-limited routing)",
                  f"drops tokens past model.moe.eval_capacity_factor={moe.eval_capacity_factor}"
                  "; the HF MoE classes never drop: pass --dropless to export the dropless "
                  "function (the run's own whenever no expert overflows)")
  if moe.num_shared_experts:
    if m.qk_norm:
      raise _refuse("model.moe.num_shared_experts with model.qk_norm=True",
                    "has no HF class: Qwen2-MoE (shared experts) has no QK-norm and Qwen3-MoE "
                    "no shared experts")
    return QWEN2_MOE
  if m.qk_norm:
    return QWEN3_MOE
  if moe.every != 1:
    raise _refuse(f"model.moe.every={moe.every} (dense layers between MoE layers) without "
                  "shared experts or QK-norm", "has no HF class: MixtralForCausalLM is MoE in "
                  "every layer, and the Qwen-MoE classes with dense layers need shared experts "
                  "(Qwen2-MoE) or QK-norm (Qwen3-MoE)")
  if not renormalized(m):
    raise _refuse("model.moe.renormalize=False", "has no equivalent in MixtralForCausalLM, "
                  "which always renormalises the top-k gate weights")
  return MIXTRAL


def hf_config(m: ml_collections.ConfigDict, kind: str, *, bos_id: int | None = None) -> dict:
  """The `config.json` of model `m` as HF class `kind` (from `export_type`).

  RoPE is written both as `rope_theta` (transformers 4) and `rope_parameters` (5).
  """
  pdt = str(m.param_dtype)
  out: dict[str, Any] = {
      "architectures": [CLASSES[kind]], "model_type": kind, "vocab_size": m.vocab_size,
      "hidden_size": m.d_model, "intermediate_size": m.d_ff,
      "num_hidden_layers": m.num_layers, "num_attention_heads": m.num_heads,
      "num_key_value_heads": m.num_kv_heads, "head_dim": head_dim(m), "hidden_act": "silu",
      "max_position_embeddings": m.max_len, "rms_norm_eps": float(m.norm_eps),
      "tie_word_embeddings": bool(m.tied_embeddings), "rope_theta": float(m.rope_base),
      "rope_scaling": None,
      "rope_parameters": {"rope_type": "default", "rope_theta": float(m.rope_base)},
      "attention_dropout": 0.0, "initializer_range": float(m.init_std), "torch_dtype": pdt,
      "dtype": pdt, "use_cache": True, "bos_token_id": bos_id, "eos_token_id": None,
      "pad_token_id": None}
  if kind == LLAMA:
    out.update(attention_bias=False, mlp_bias=False)
  if kind in (QWEN3, QWEN2_MOE, QWEN3_MOE):
    out.update(use_sliding_window=False, sliding_window=None, max_window_layers=m.num_layers,
               layer_types=["full_attention"] * m.num_layers)
  if kind in (QWEN3, QWEN3_MOE):
    out.update(attention_bias=False)
  moe = m.moe
  if kind == MIXTRAL:
    out.update(intermediate_size=expert_d_ff(m), num_local_experts=moe.num_experts,
               num_experts_per_tok=moe.top_k, sliding_window=None, router_jitter_noise=0.0,
               output_router_logits=False, router_aux_loss_coef=float(moe.load_balance_coef))
  if kind in (QWEN2_MOE, QWEN3_MOE):
    out.update(num_experts=moe.num_experts, num_experts_per_tok=moe.top_k,
               moe_intermediate_size=expert_d_ff(m), decoder_sparse_step=moe.every,
               mlp_only_layers=[], norm_topk_prob=renormalized(m), output_router_logits=False,
               router_aux_loss_coef=float(moe.load_balance_coef))
  if kind == QWEN2_MOE:
    # The zero q/k/v biases the class adds (`qkv_bias`) are written as zeros
    # (`scaling.hf.tensors`), so transformers 4, which always has them, loads the same model.
    out.update(shared_expert_intermediate_size=moe.num_shared_experts * expert_d_ff(m),
               qkv_bias=True)
  return out


# ----------------------------------------------------------------------------- import


def _unsupported(where: str, feature: str, why: str) -> ScalingError:
  return ScalingError(f"{where}: {feature} {why}; scaling cannot import this checkpoint")


def _rope_base(hf: dict, kind: str, where: str) -> float:
  params = hf.get("rope_parameters") or {}
  if "full_attention" in params and isinstance(params["full_attention"], dict):
    params = params["full_attention"]
  scaling = hf.get("rope_scaling") or {}
  rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type")
  if rope_type not in (None, "default"):
    raise _unsupported(where, f"rope_type={rope_type!r} (scaled rotary frequencies)",
                       "has no equivalent here (plain RoPE only)")
  factor = params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
  if factor not in (None, 1, 1.0):
    raise _unsupported(where, f"partial_rotary_factor={factor}", "has no equivalent here "
                       "(RoPE on every channel only)")
  return float(params.get("rope_theta", hf.get("rope_theta", _DEFAULTS[kind]["rope_theta"])))


def _check_attention(hf: dict, kind: str, where: str) -> None:
  for key in ("attention_bias", "mlp_bias"):
    if hf.get(key):
      raise _unsupported(where, f"{key}=true", "has no equivalent here (no biases)")
  window = hf.get("sliding_window", _DEFAULTS[kind].get("sliding_window"))
  sliding = hf.get("use_sliding_window", kind in (MISTRAL, MIXTRAL))
  max_pos = hf.get("max_position_embeddings", _DEFAULTS[kind]["max_position_embeddings"])
  if sliding and window and window < max_pos:
    raise _unsupported(where, f"sliding_window={window}", "(sliding-window attention) has no "
                       "equivalent here (full causal attention only)")
  types = set(hf.get("layer_types") or ["full_attention"])
  if types != {"full_attention"}:
    raise _unsupported(where, f"layer_types={sorted(types)}", "has no equivalent here")
  act = hf.get("hidden_act", hf.get("hidden_activation", "silu"))
  if act != "silu":
    raise _unsupported(where, f"hidden_act={act!r}", "has no equivalent here (SwiGLU with "
                       "SiLU only)")


def _required(hf: dict, key: str, where: str) -> int:
  value = hf.get(key)
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    raise ScalingError(f"{where} has no positive integer {key!r} (found {value!r}); it is "
                       "partial or not a transformers config")
  return value


def model_fields(hf: dict, where: str) -> dict:
  """The `model.*` fields (a nested dict for `cfg.model.update`) of HF config `hf`, read from
  `where` (named in errors)."""
  kind = hf.get("model_type")
  if kind not in IMPORTABLE:
    raise ScalingError(f"{where}: model_type={kind!r} (architectures "
                       f"{hf.get('architectures')}) is not supported; scaling imports "
                       f"{', '.join(IMPORTABLE)} checkpoints")
  _check_attention(hf, kind, where)
  d, layers = _required(hf, "hidden_size", where), _required(hf, "num_hidden_layers", where)
  heads = _required(hf, "num_attention_heads", where)
  kv = hf.get("num_key_value_heads") or heads
  hd = hf.get("head_dim") or d // heads
  d_ff = _required(hf, "intermediate_size", where)
  fields = dict(
      name=f"hf-{kind}", num_layers=layers, d_model=d, num_heads=heads, num_kv_heads=kv,
      head_dim=0 if hd * heads == d else hd, d_ff=d_ff,
      vocab_size=_required(hf, "vocab_size", where),
      max_len=int(hf.get("max_position_embeddings",
                         _DEFAULTS[kind]["max_position_embeddings"])),
      mlp="swiglu", position="rope", rope_base=_rope_base(hf, kind, where),
      qk_norm=kind in (QWEN3, QWEN3_MOE), tied_embeddings=bool(hf.get("tie_word_embeddings",
                                                                       False)),
      logit_softcap=0.0, norm_eps=float(hf.get("rms_norm_eps", _DEFAULTS[kind]["rms_norm_eps"])),
      init_std=float(hf.get("initializer_range", 0.02)))
  fields["moe"] = _moe_fields(hf, kind, where, d_ff, layers)
  return fields


def _moe_fields(hf: dict, kind: str, where: str, d_ff: int, layers: int) -> dict:
  if kind in (LLAMA, MISTRAL, QWEN3):
    return dict(num_experts=0)
  get = lambda key: hf.get(key, _DEFAULTS[kind].get(key))  # noqa: E731
  # transformers 5 writes Qwen3-MoE's expert count as `num_local_experts` (Mixtral's name),
  # transformers 4 as `num_experts`; either is read for every MoE class.
  experts = hf.get("num_experts", hf.get("num_local_experts"))
  experts = int(experts if experts is not None else get(
      "num_local_experts" if kind == MIXTRAL else "num_experts"))
  common = dict(gating="softmax_topk", dropless=True, num_shared_experts=0)
  if kind == MIXTRAL:
    return dict(common, num_experts=experts,
                top_k=int(get("num_experts_per_tok")), expert_d_ff=0, every=1, renormalize=True)
  if not experts:
    raise _unsupported(where, "num_experts=0", "(a Qwen-MoE config without experts) is not "
                       "supported; convert it to a dense model")
  if hf.get("mlp_only_layers"):
    raise _unsupported(where, f"mlp_only_layers={hf['mlp_only_layers']}",
                       "(dense layers at chosen positions) has no equivalent here: dense layers "
                       "come only every model.moe.every layers")
  every = int(hf.get("decoder_sparse_step", 1))
  if layers % every:
    raise _unsupported(where, f"decoder_sparse_step={every} with num_hidden_layers={layers}",
                       "leaves dense layers after the last MoE layer, which model.moe.every "
                       "cannot express")
  fe = int(get("moe_intermediate_size"))
  out = dict(common, num_experts=experts, top_k=int(get("num_experts_per_tok")),
             expert_d_ff=0 if fe == d_ff else fe, every=every,
             renormalize=bool(hf.get("norm_topk_prob", False)))
  if kind == QWEN2_MOE:
    shared = int(get("shared_expert_intermediate_size"))
    if shared <= 0 or shared % fe:
      raise _unsupported(where, f"shared_expert_intermediate_size={shared}",
                         f"is not a positive multiple of moe_intermediate_size={fe}, which "
                         "model.moe.num_shared_experts needs")
    out["num_shared_experts"] = shared // fe
  return out
