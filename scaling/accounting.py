"""Parameter, FLOP and memory counts: the one source of truth for N, N_active, C and bytes.

Conventions (stated because the literature mixes them):
- N, `params_non_embedding`: Kaplan et al. 2020 (Sec. 2.1) exclude the token embedding, the
  untied output matrix and position embeddings; norms (and biases, routers) are counted.
- FLOPs are *training* FLOPs per token (forward + backward = 3x forward), one multiply-add = 2.
  - `6N`: 6 N (Kaplan et al. 2020, Eq. 2.1 without the context term).
  - `kaplan`: 6 N + 6 n_layer n_ctx d_attn (Kaplan et al. 2020, Table 1, C_forward x 3).
  - `chinchilla`: Hoffmann et al. 2022 Appendix F, every term including embeddings and output
    logits, full (unmasked) S^2 attention terms. Their Table A4 ratios reproduce only without
    the embedding and logit terms: `chinchilla_forward_flops(..., embeddings=False)`.
- Memory: ZeRO accounting (Rajbhandari et al. 2020, Sec. 3.1): mixed-precision Adam needs
  16 bytes per parameter (here float32 master params 4 + float32 grads 4 + Adam m, v 8), divided
  by the number of devices each tensor is split over under the rules table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np

from scaling.config import expert_d_ff, head_dim
from scaling.parallel.sharding import data_parallel_width, sharded_bytes

FLOPS_METHODS = ("6N", "kaplan", "chinchilla")


def _mlp_matrices(m) -> int:
  return 3 if m.mlp == "swiglu" else 2


def _moe_layers(m: ml_collections.ConfigDict) -> int:
  """Number of MoE layers (the last of every group of `moe.every`); 0 for dense models."""
  return m.num_layers // m.moe.every if m.moe.num_experts else 0


def _attention_params(m: ml_collections.ConfigDict) -> int:
  d, n, k, h = m.d_model, m.num_heads, m.num_kv_heads, head_dim(m)
  attn = d * h * (n + 2 * k) + n * h * d
  if m.qk_norm:
    attn += 2 * h
  if m.position == "relative":
    attn += d * n * h  # Transformer-XL relative key projection W_r
  return attn + 2 * d  # + the block's two norms


def _moe_ffn_params(m: ml_collections.ConfigDict, experts: int) -> int:
  """Router + `experts` routed experts + the shared experts of one MoE layer."""
  one = _mlp_matrices(m) * m.d_model * expert_d_ff(m)
  return m.d_model * m.moe.num_experts + (experts + m.moe.num_shared_experts) * one


def layer_params(m: ml_collections.ConfigDict) -> int:
  """Parameters of one dense transformer block."""
  return _attention_params(m) + _mlp_matrices(m) * m.d_model * m.d_ff


def param_counts(m: ml_collections.ConfigDict) -> dict[str, int]:
  """Exact parameter counts of `Transformer(m)`.

  `params_non_embedding` is N; `params_active` counts what one token uses: everything except
  the routed experts it is not sent to (top_k of num_experts per MoE layer; the router and
  shared experts are always active), including embeddings, as Mixtral's "12.9B active".
  `params_active_non_embedding` is N_active, the N of MoE scaling laws.
  """
  d, v = m.d_model, m.vocab_size
  n_moe = _moe_layers(m)
  dense_layers = m.num_layers - n_moe
  attention = m.num_layers * _attention_params(m)
  dense_ffn = dense_layers * _mlp_matrices(m) * d * m.d_ff
  non_embedding = attention + dense_ffn + d  # + final norm
  active_non_embedding = non_embedding
  if n_moe:
    non_embedding += n_moe * _moe_ffn_params(m, m.moe.num_experts)
    active_non_embedding += n_moe * _moe_ffn_params(m, m.moe.top_k)
  embedding = v * d * (1 if m.tied_embeddings else 2)
  if m.position == "learned":
    embedding += m.max_len * d
  return dict(params_non_embedding=non_embedding, params_embedding=embedding,
              params_total=non_embedding + embedding,
              params_active=active_non_embedding + embedding,
              params_active_non_embedding=active_non_embedding)


def count_params(tree) -> int:
  """Number of scalars in a pytree of arrays or ShapeDtypeStructs (e.g. an NNX Param state)."""
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def chinchilla_forward_flops(*, num_layers: int, d_model: int, num_heads: int, head_dim: int,
                             d_ff: int, seq_len: int, vocab_size: int,
                             num_kv_heads: int | None = None, mlp: str = "gelu",
                             embeddings: bool = True) -> float:
  """Forward FLOPs of one sequence of `seq_len` tokens, Hoffmann et al. 2022 Appendix F.

  Per layer: QKV 2 S d (h_q + 2 h_kv) k (= 2*3*S*d*k*h for MHA), logits 2 S^2 k h, softmax
  3 h S^2, attention over values 2 S^2 k h, output projection 2 S k h d, MLP 2 S (m d d_ff) with
  m = 2 matrices (GELU) or 3 (SwiGLU). Embeddings and output logits 2 S V d each.
  """
  s, d, h, k = seq_len, d_model, num_heads, head_dim
  kv = num_heads if num_kv_heads is None else num_kv_heads
  attention = (2 * s * d * k * (h + 2 * kv) + 2 * s * s * k * h + 3 * h * s * s
               + 2 * s * s * k * h + 2 * s * k * h * d)
  dense = 2 * s * (3 if mlp == "swiglu" else 2) * d * d_ff
  total = num_layers * (attention + dense)
  if embeddings:
    total += 2 * s * vocab_size * d * 2
  return float(total)


def flops_per_token(m: ml_collections.ConfigDict, seq_len: int) -> dict[str, float]:
  """Training FLOPs per token (forward + backward) by each method in `FLOPS_METHODS`.

  MoE models count what a token uses: `6N` and `kaplan` use N_active; `chinchilla` charges each
  MoE layer its router (2 d E), top_k routed and the shared experts' MLPs instead of a dense MLP.
  """
  counts = param_counts(m)
  n = counts["params_active_non_embedding"]
  d_attn = m.num_heads * head_dim(m)
  attention_and_embeddings = chinchilla_forward_flops(
      num_layers=m.num_layers, d_model=m.d_model, num_heads=m.num_heads, head_dim=head_dim(m),
      num_kv_heads=m.num_kv_heads, d_ff=0, seq_len=seq_len, vocab_size=m.vocab_size,
      mlp=m.mlp) / seq_len
  n_moe = _moe_layers(m)
  mult = _mlp_matrices(m)
  ffn = (m.num_layers - n_moe) * 2 * mult * m.d_model * m.d_ff
  if n_moe:
    routed = m.moe.top_k + m.moe.num_shared_experts
    ffn += n_moe * (2 * routed * mult * m.d_model * expert_d_ff(m)
                    + 2 * m.d_model * m.moe.num_experts)
  chin = 3 * (attention_and_embeddings + ffn)
  return {"6N": 6.0 * n, "kaplan": 6.0 * n + 6.0 * m.num_layers * seq_len * d_attn,
          "chinchilla": float(chin)}


def run_counts(cfg: ml_collections.ConfigDict) -> dict:
  """N, total/active params, tokens D and FLOPs C (by every method) of the configured run.

  D = train.steps x train.global_batch x train.seq_len; C = D x FLOPs per token by
  `train.flops_method` (and by every method in `flops_by_method`).
  """
  counts = param_counts(cfg.model)
  tokens = cfg.train.steps * cfg.train.global_batch * cfg.train.seq_len
  per_token = flops_per_token(cfg.model, cfg.train.seq_len)
  return dict(**counts, tokens=tokens, flops=per_token[cfg.train.flops_method] * tokens,
              flops_method=cfg.train.flops_method,
              flops_by_method={k: v * tokens for k, v in per_token.items()},
              flops_per_token=per_token[cfg.train.flops_method])


def _optimizer_bytes(shape: tuple[int, ...], optimizer: str) -> int:
  """float32 optimizer-state scalars per parameter tensor, times 4 bytes."""
  size = math.prod(shape)
  if optimizer == "adamw":
    return 8 * size  # m and v
  if optimizer == "lion":
    return 4 * size  # momentum only
  # Adafactor (Shazeer & Stern 2018, Sec. 3): factored second moments for matrices.
  if len(shape) >= 2:
    return 4 * (size // shape[-1] + size // shape[-2])
  return 4 * size


def memory_per_device(cfg: ml_collections.ConfigDict,
                      mesh_shape: Mapping[str, int]) -> dict[str, float]:
  """Training memory of one device, in bytes, for `cfg` on a mesh of `mesh_shape`.

  Params, grads and optimizer state are exact per tensor under the rules table (float32 master
  weights and grads, optimizer state per `train.optimizer`). Activations are an estimate after
  Korthikanti et al. 2022 (Sec. 4.1, Eq. 2, 16-bit activations, no dropout masks): per layer
  s b D (30 + 5 a s / D) bytes without recomputation, 2 s b D with full recomputation, divided
  by the tensor-parallel degree; `dots_saveable` is taken as halfway between.
  """
  from flax import nnx

  from scaling.models.dense import abstract_model
  from scaling.parallel.sharding import _names

  rules = dict(cfg.mesh.rules)
  state = nnx.state(abstract_model(cfg), nnx.Param)
  params = grads = opt = 0.0
  for _, var in nnx.to_flat_state(state):
    value = var.get_value()
    names = _names(var) or (None,) * value.ndim
    itemsize = np.dtype(value.dtype).itemsize
    local = sharded_bytes(value.shape, names, 1, mesh_shape, rules)
    params += local * itemsize
    grads += local * 4
    opt += local * _optimizer_bytes(value.shape, cfg.train.optimizer) / math.prod(value.shape)

  m, t = cfg.model, cfg.train
  data_ways = data_parallel_width(rules, mesh_shape)
  tp = mesh_shape.get("model", 1)
  b = max(1.0, t.global_batch / data_ways / t.microbatches)
  s, dm, a = t.seq_len, m.d_model, m.num_heads
  full = s * b * dm * (30 + 5 * a * s / dm) / tp
  per_layer = {"none": full, "full": 2 * s * b * dm, "dots_saveable": (full + 2 * s * b * dm) / 2}
  logits = 4 * b * s * m.vocab_size / tp  # float32 logits for the loss
  activations = m.num_layers * per_layer[m.remat] + logits
  total = params + grads + opt + activations
  return dict(params=params, grads=grads, optimizer=opt, activations=activations, total=total)


def info(cfg: ml_collections.ConfigDict, mesh_shape: Mapping[str, int] | None = None) -> dict:
  """Everything `scaling info` reports: counts, FLOPs per token by method, memory per device."""
  m = cfg.model
  mesh_shape = dict(mesh_shape or {"data": 1, "model": 1, "expert": 1})
  counts = param_counts(m)
  memory = memory_per_device(cfg, mesh_shape)
  return dict(
      model=m.get("name", ""),
      shape=dict(num_layers=m.num_layers, d_model=m.d_model, num_heads=m.num_heads,
                 num_kv_heads=m.num_kv_heads, head_dim=head_dim(m), d_ff=m.d_ff,
                 vocab_size=m.vocab_size, max_len=m.max_len, mlp=m.mlp, position=m.position,
                 tied_embeddings=m.tied_embeddings),
      **counts,
      moe=(dict(num_experts=m.moe.num_experts, top_k=m.moe.top_k,
                expert_d_ff=expert_d_ff(m), num_shared_experts=m.moe.num_shared_experts,
                every=m.moe.every) if m.moe.num_experts else None),
      seq_len=cfg.train.seq_len,
      flops_per_token=flops_per_token(m, cfg.train.seq_len),
      mesh=mesh_shape,
      memory_per_device_bytes=memory["total"],
      memory_breakdown_bytes=memory,
  )
