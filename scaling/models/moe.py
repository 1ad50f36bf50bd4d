"""Mixture-of-Experts feed-forward layer: router, capacity, dispatch, experts, router losses.

Tokens are routed per sequence: each batch row is a routing group (GShard, Lepikhin et al. 2021,
Sec. 2.2), so capacity, drops and outputs do not depend on how the batch is sharded. Capacity per
expert and group is C = ceil(capacity_factor * L * top_k / E) (Fedus et al. 2022, Switch
Transformer, Eq. 3 per group), or C = L with `dropless=True` (no token can be dropped). Choices
are served in priority order: every token's first choice before any second choice, then by
position. A dropped choice contributes nothing; the residual carries the token through.

Dispatch implementations (`moe.dispatch`), identical outputs when nothing is dropped:
  einsum  one-hot dispatch/combine tensors [B, L, E, C] (GShard): the simple reference.
  sort    token copies sorted by expert and run as one grouped matmul (`jax.lax.ragged_dot`).
  pallas  `scaling.kernels`: fused router, permute/unpermute and grouped matmul kernels with
          custom VJPs (Pallas GPU on GPU, megablox on TPU, pure-JAX references on CPU);
          choices dropped by capacity never reach the experts.
With a mesh whose `expert` axis is larger than 1, experts are sharded over it and tokens travel
to their experts' devices with `all_to_all` under `shard_map`, in static [E, rows x C] buffers
(`jax.lax.ragged_all_to_all` is not implemented on XLA:CPU, see STACK-NOTES).

Shapes: B batch rows (groups), L tokens per row, D d_model, E experts, K top_k, C capacity,
F expert_d_ff.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.sharding import PartitionSpec as P

from scaling.config import expert_d_ff, parse_axes
from scaling.kernels import gmm as gmm_lib
from scaling.kernels import permute as permute_lib
from scaling.kernels import router as router_lib
from scaling.models.layers import Mlp, dtype_of, normal


def capacity(m: ml_collections.ConfigDict, length: int, train: bool) -> int:
  """Slots per expert per sequence of `length` tokens."""
  moe = m.moe
  if moe.dropless:
    return length
  factor = moe.capacity_factor if train else moe.eval_capacity_factor
  return max(1, min(length, math.ceil(factor * length * moe.top_k / moe.num_experts)))


def route(logits_BxLxE: jax.Array, moe: ml_collections.ConfigDict):
  """Top-k experts and their gate weights from float32 router logits.

  `softmax_topk` (Switch/GShard): softmax over all experts, keep the k largest probabilities
  (renormalised to sum 1 when `renormalize`). `topk_softmax` (Mixtral, Jiang et al. 2024, Eq. 1):
  softmax over the k largest logits.
  Returns expert ids [B, L, K] int32, weights [B, L, K] float32, probs [B, L, E] float32.
  """
  probs = jax.nn.softmax(logits_BxLxE, axis=-1)
  if moe.gating == "topk_softmax":
    top_logits, ids = jax.lax.top_k(logits_BxLxE, moe.top_k)
    weights = jax.nn.softmax(top_logits, axis=-1)
  else:
    weights, ids = jax.lax.top_k(probs, moe.top_k)
    if moe.renormalize:
      weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
  return ids.astype(jnp.int32), weights, probs


def slot_positions(ids_BxLxK: jax.Array, num_experts: int) -> jax.Array:
  """Position of each (token, choice) in its expert's queue within its row: [B, L, K] int32.

  Priority order is choice-major (all first choices, then all second choices, ...), then token.
  """
  b, length, k = ids_BxLxK.shape
  onehot_BxKLxE = jax.nn.one_hot(jnp.swapaxes(ids_BxLxK, 1, 2).reshape(b, k * length), num_experts,
                                 dtype=jnp.int32)
  pos_BxKLxE = jnp.cumsum(onehot_BxKLxE, axis=1) - 1
  pos_BxKL = jnp.sum(pos_BxKLxE * onehot_BxKLxE, axis=-1)
  return jnp.swapaxes(pos_BxKL.reshape(b, k, length), 1, 2)


def load_balance_loss(probs_BxLxE: jax.Array, ids_BxLxK: jax.Array) -> jax.Array:
  """Switch load-balancing loss without its coefficient: E * sum_i f_i P_i (Fedus et al. Eq. 4).

  f_i: fraction of (token, choice) assignments sent to expert i; P_i: mean router probability
  of expert i. Equals 1 under exactly uniform routing and grows with imbalance.
  """
  e = probs_BxLxE.shape[-1]
  f = jnp.mean(jax.nn.one_hot(ids_BxLxK, e, dtype=jnp.float32), axis=(0, 1, 2))
  p = jnp.mean(probs_BxLxE, axis=(0, 1))
  return e * jnp.sum(f * p)


def router_z_loss(logits_BxLxE: jax.Array) -> jax.Array:
  """ST-MoE router z-loss without its coefficient: mean (logsumexp logits)^2 (Zoph et al. 2022,
  Eq. 5)."""
  return jnp.mean(jnp.square(jax.nn.logsumexp(logits_BxLxE, axis=-1)))


def _expert_ffn(x_ExNxD, w_gate, w_up, w_down, mlp: str, dtype):
  """Batched per-expert FFN: [E, N, D] -> [E, N, D]."""
  up = jnp.einsum("END,EDF->ENF", x_ExNxD, w_up.astype(dtype))
  if mlp == "swiglu":
    h = jax.nn.silu(jnp.einsum("END,EDF->ENF", x_ExNxD, w_gate.astype(dtype))) * up
  else:
    h = jax.nn.gelu(up)
  return jnp.einsum("ENF,EFD->END", h, w_down.astype(dtype))


class MoeMlp(nnx.Module):
  """Routed experts (+ optional always-on shared experts) in place of the dense MLP."""

  def __init__(self, m: ml_collections.ConfigDict, rules: Mapping[str, str], *, rngs: nnx.Rngs):
    self.m, self.rules = m, rules
    moe = m.moe
    d, e, f = m.d_model, moe.num_experts, expert_d_ff(m)
    pdt = dtype_of(m.param_dtype)
    std_out = m.init_std / math.sqrt(2 * m.num_layers)
    init = lambda std, names, shape: nnx.Param(normal(std, names)(rngs.params(), shape, pdt))
    # Router in float32 whatever the compute dtype (Fedus et al. 2022, Sec. 2.4).
    self.router = init(m.init_std, ("embed", None), (d, e))
    self.w_up = init(m.init_std, ("expert", "embed", "mlp"), (e, d, f))
    if m.mlp == "swiglu":
      self.w_gate = init(m.init_std, ("expert", "embed", "mlp"), (e, d, f))
    self.w_down = init(std_out, ("expert", "mlp", "embed"), (e, f, d))
    if moe.num_shared_experts:
      # n shared experts of width F are one dense MLP of width n F (DeepSeekMoE, Dai et al. 2024).
      shared = ml_collections.ConfigDict(m.to_dict())
      shared.d_ff = moe.num_shared_experts * f
      self.shared = Mlp(shared, rules, rngs=rngs)

  def __call__(self, x_BxLxD: jax.Array, *, train: bool = False, rng: jax.Array | None = None):
    m, moe = self.m, self.m.moe
    b, length, d = x_BxLxD.shape
    router_in = x_BxLxD.astype(jnp.float32)
    if train and moe.router_jitter > 0 and rng is not None:
      # Multiplicative input jitter (Fedus et al. 2022, Sec. 2.4 / Table 2).
      eps = moe.router_jitter
      router_in = router_in * jax.random.uniform(rng, router_in.shape, jnp.float32,
                                                 1.0 - eps, 1.0 + eps)
    logits_BxLxE = router_in @ self.router[...].astype(jnp.float32)
    if moe.dispatch == "pallas":
      def kernel_route(logits_BxLxE):
        bb = logits_BxLxE.shape[0]
        r = router_lib.route(logits_BxLxE.reshape(bb * length, -1), moe.top_k,
                             gating=moe.gating, renormalize=moe.renormalize)
        return (r.ids.reshape(bb, length, -1), r.weights.reshape(bb, length, -1),
                r.probs.reshape(logits_BxLxE.shape))

      ids, weights, probs = self._per_batch_shard(kernel_route, logits_BxLxE)
    else:
      ids, weights, probs = route(logits_BxLxE, moe)
    cap = capacity(m, length, train)
    pos = slot_positions(ids, moe.num_experts)
    keep = pos < cap

    mesh = jax.sharding.get_abstract_mesh()
    ep = 0 if mesh.empty else dict(zip(mesh.axis_names, mesh.axis_sizes, strict=True)).get(
        "expert", 1)
    dtype = dtype_of(m.dtype)
    w = [self.w_gate[...] if m.mlp == "swiglu" else None, self.w_up[...], self.w_down[...]]
    if ep > 1:
      y = self._expert_parallel(x_BxLxD.astype(dtype), ids, weights, pos, keep, cap, w)
    elif moe.dispatch == "einsum":
      y = self._einsum(x_BxLxD.astype(dtype), ids, weights, pos, keep, cap, w)
    elif moe.dispatch == "pallas":
      y = self._pallas(x_BxLxD.astype(dtype), ids, weights, pos, keep, cap, w)
    else:
      y = self._sort(x_BxLxD.astype(dtype), ids, weights, keep, w)
    if moe.num_shared_experts:
      y = y + self.shared(x_BxLxD)

    e = moe.num_experts
    frac = jnp.mean(jax.nn.one_hot(ids, e, dtype=jnp.float32), axis=(0, 1, 2))
    entropy = -jnp.mean(jnp.sum(probs * jnp.log(probs + 1e-9), axis=-1))
    aux = {"load_balance": load_balance_loss(probs, ids), "router_z": router_z_loss(logits_BxLxE),
           "expert_fraction": frac, "dropped_fraction": 1.0 - jnp.mean(keep.astype(jnp.float32)),
           "router_entropy": entropy}
    return y.astype(dtype), aux

  # --- dispatch implementations -----------------------------------------------------------

  def _einsum(self, x, ids, weights, pos, keep, cap, w):
    e = self.m.moe.num_experts
    slot = jax.nn.one_hot(jnp.where(keep, pos, cap), cap, dtype=x.dtype)  # dropped -> zeros
    expert = jax.nn.one_hot(ids, e, dtype=x.dtype)
    dispatch_BxLxExC = jnp.einsum("BLKE,BLKC->BLEC", expert, slot)
    combine_BxLxExC = jnp.einsum("BLKE,BLKC,BLK->BLEC", expert, slot, weights.astype(x.dtype))
    in_ExBxCxD = jnp.einsum("BLEC,BLD->EBCD", dispatch_BxLxExC, x)
    b, _, _, d = x.shape[0], None, None, x.shape[-1]
    out = _expert_ffn(in_ExBxCxD.reshape(e, b * cap, d), *w, self.m.mlp, x.dtype)
    return jnp.einsum("BLEC,EBCD->BLD", combine_BxLxExC, out.reshape(e, b, cap, d))

  def _sort(self, x, ids, weights, keep, w):
    b, length, d = x.shape
    k, e = ids.shape[-1], self.m.moe.num_experts
    flat_ids = ids.reshape(-1)  # [B*L*K] in (row, token, choice) order
    token = jnp.repeat(jnp.arange(b * length), k)
    order = jnp.argsort(flat_ids, stable=True)
    group_sizes = jnp.bincount(flat_ids, length=e).astype(jnp.int32)
    rows = x.reshape(b * length, d)[token[order]] * keep.reshape(-1)[order, None].astype(x.dtype)
    up = jax.lax.ragged_dot(rows, w[1].astype(x.dtype), group_sizes)
    if self.m.mlp == "swiglu":
      h = jax.nn.silu(jax.lax.ragged_dot(rows, w[0].astype(x.dtype), group_sizes)) * up
    else:
      h = jax.nn.gelu(up)
    out_sorted = jax.lax.ragged_dot(h, w[2].astype(x.dtype), group_sizes)
    out = jnp.zeros_like(out_sorted).at[order].set(out_sorted)  # un-sort
    gate = (weights * keep).reshape(-1, 1).astype(x.dtype)
    return jnp.sum((out * gate).reshape(b, length, k, d), axis=2)

  def _per_batch_shard(self, fn, *args_BxLx, weights=(), weight_specs=(), reduce_axes=None):
    """`fn(*args_BxLx, *weights)` on each device's rows of the batch, under `shard_map`.

    Pallas kernels are custom calls that XLA's partitioner cannot split: under plain `jit` on a
    batch sharded over `data`, every device would gather the whole batch and compute all of it.
    Here each device runs the kernels on its own rows (capacity is per sequence, so the result
    is the same); `weights` arrive as `weight_specs` say (gathered over FSDP axes), and outputs
    are summed over `reduce_axes` (the tensor-parallel d_ff shards). No mesh: a plain call.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
      return fn(*args_BxLx, *weights)
    batch = parse_axes(self.rules.get("batch", "")) or None

    def local(*a):
      out = fn(*a)
      return jax.lax.psum(out, reduce_axes) if reduce_axes else out

    rows = P(batch)  # leading axis split, the rest whole; a prefix of every output too
    return jax.shard_map(local, in_specs=(*[rows] * len(args_BxLx), *weight_specs),
                         out_specs=rows, check_vma=False)(*args_BxLx, *weights)

  def _pallas(self, x, ids, weights, pos, keep, cap, w):
    """`scaling.kernels`: permute -> grouped matmuls -> weighted unpermute, per batch shard.

    The plan puts kept choices first, grouped by expert, and dropped ones in a zero tail that
    the grouped matmul skips; the backward passes are gathers (no scatter-add of rows). d_ff
    may be split over the `mlp` rule's axes (tensor parallelism): partial outputs are summed.
    """
    k, e, mlp = ids.shape[-1], self.m.moe.num_experts, self.m.mlp
    tp = tuple(a for a in parse_axes(self.rules.get("mlp", "")) if a != "expert") or None
    gate_w = w[0] if w[0] is not None else jnp.zeros((), x.dtype)

    def local(x, ids, weights, pos, keep, w_gate, w_up, w_down):
      b, length, d = x.shape
      plan = permute_lib.make_plan(ids, e, capacity=cap, pos_GxLxK=pos)
      rows = permute_lib.permute(x.reshape(b * length, d), plan)  # [B*L*K, D]
      sizes = plan.group_sizes
      up = gmm_lib.gmm(rows, w_up.astype(x.dtype), sizes)
      if mlp == "swiglu":
        h = jax.nn.silu(gmm_lib.gmm(rows, w_gate.astype(x.dtype), sizes)) * up
      else:
        h = jax.nn.gelu(up)
      out = gmm_lib.gmm(h, w_down.astype(x.dtype), sizes)
      gate = (weights * keep).reshape(b * length, k)
      return permute_lib.unpermute(out, plan, gate).reshape(b, length, d)

    specs = (P(None, None, tp) if w[0] is not None else P(), P(None, None, tp), P(None, tp, None))
    return self._per_batch_shard(local, x, ids, weights, pos, keep,
                                 weights=(gate_w, w[1], w[2]), weight_specs=specs,
                                 reduce_axes=tp)

  def _expert_parallel(self, x, ids, weights, pos, keep, cap, w):
    """Experts split over the `expert` mesh axis; tokens exchanged with all_to_all."""
    m, rules = self.m, self.rules
    e = m.moe.num_experts
    batch = parse_axes(rules.get("batch", "")) or None
    mlp_axes = parse_axes(rules.get("mlp", ""))
    tp = tuple(a for a in mlp_axes if a != "expert") or None
    tok = P(batch, None, None)
    wspec = P("expert", None, tp)
    dspec = P("expert", tp, None)
    gate_spec = wspec if w[0] is not None else None

    def local(x, ids, weights, pos, keep, w_gate, w_up, w_down):
      b, length, d = x.shape
      k = ids.shape[-1]
      ep = jax.lax.axis_size("expert")
      # Slot of each kept (token, choice) in a [E, b * C] buffer; dropped ones go nowhere.
      row = jnp.broadcast_to(jnp.arange(b)[:, None, None], ids.shape)
      slot = ids * (b * cap) + row * cap + pos
      slot = jnp.where(keep, slot, e * b * cap).reshape(-1)
      src = jnp.repeat(x.reshape(b * length, d), k, axis=0)
      buf = jnp.zeros((e * b * cap, d), x.dtype).at[slot].set(src, mode="drop")
      # [E, bC, D] -> to the owners of each expert: [E/ep, ep * bC, D].
      buf = buf.reshape(ep, e // ep, b * cap, d)
      buf = jax.lax.all_to_all(buf, "expert", 0, 0, tiled=False)
      buf = jnp.swapaxes(buf, 0, 1).reshape(e // ep, ep * b * cap, d)
      out = _expert_ffn(buf, w_gate, w_up, w_down, m.mlp, x.dtype)
      if tp:
        out = jax.lax.psum(out, tp)
      out = jnp.swapaxes(out.reshape(e // ep, ep, b * cap, d), 0, 1)
      out = jax.lax.all_to_all(out, "expert", 0, 0, tiled=False).reshape(e * b * cap, d)
      picked = out.at[slot].get(mode="fill", fill_value=0).reshape(b, length, k, d)
      return jnp.sum(picked * (weights * keep)[..., None].astype(x.dtype), axis=2)

    gate = w[0] if w[0] is not None else jnp.zeros((), x.dtype)
    fn = jax.shard_map(
        local, in_specs=(tok, tok, tok, tok, tok, gate_spec or P(), wspec, dspec),
        out_specs=tok, check_vma=False)
    return fn(x, ids, weights, pos, keep, gate, w[1], w[2])
