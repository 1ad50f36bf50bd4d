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
When the mesh axes of the `expert` rule (`sharding.expert_axes`) have more than one device,
experts are sharded over them and tokens travel to their experts' devices with `all_to_all`
under `shard_map`, in static [E, rows x C] buffers (`jax.lax.ragged_all_to_all` has no XLA:CPU
implementation in jax 0.10, so the exchange is not ragged).

Each dispatch is a pure function of the tokens, their `Assignment` and the `ExpertWeights`;
which mesh axes carry what comes from `scaling.parallel.sharding`, never from this module.
Routing is `scaling.kernels.router.route_reference` and slot positions
`scaling.kernels.permute.slot_positions`: the model's routing is the kernels' reference.

Shapes: B batch rows (groups), L tokens per row, D d_model, E experts, K top_k, C capacity,
F expert_d_ff.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.sharding import PartitionSpec as P

from scaling.config import expert_d_ff
from scaling.kernels import gmm as gmm_lib
from scaling.kernels import permute as permute_lib
from scaling.kernels import router as router_lib
from scaling.kernels.backend import KernelBackend
from scaling.kernels.permute import slot_positions
from scaling.models import parametrization as mup
from scaling.models.layers import Mlp, dtype_of, ffn_hidden, no_eager_sharding, normal
from scaling.parallel import sharding

__all__ = ["Assignment", "ExpertWeights", "MoeMlp", "capacity", "dispatch", "einsum_dispatch",
           "expert_parallel_dispatch", "load_balance_loss", "pallas_dispatch", "route",
           "router_z_loss", "slot_positions", "sort_dispatch"]

# Logical axes of the expert weights: [E, D, F] (gate, up) and [E, F, D] (down).
IN_AXES = ("expert", "embed", "mlp")
OUT_AXES = ("expert", "mlp", "embed")


class ExpertWeights(NamedTuple):
  """The routed experts' matrices, in their parameter dtype."""

  gate: jax.Array | None  # [E, D, F] SwiGLU gate; None for GELU experts
  up: jax.Array  # [E, D, F]
  down: jax.Array  # [E, F, D]


class Assignment(NamedTuple):
  """Where each (token, choice) goes, [B, L, K] each."""

  ids: jax.Array  # int32 expert
  weights: jax.Array  # float32 gate weight
  pos: jax.Array  # int32 slot in its expert's queue within its row (`slot_positions`)
  keep: jax.Array  # bool pos < capacity


def capacity(m: ml_collections.ConfigDict, length: int, train: bool) -> int:
  """Slots per expert per sequence of `length` tokens."""
  moe = m.moe
  if moe.dropless:
    return length
  factor = moe.capacity_factor if train else moe.eval_capacity_factor
  return max(1, min(length, math.ceil(factor * length * moe.top_k / moe.num_experts)))


def route(logits_BxLxE: jax.Array, moe: ml_collections.ConfigDict):
  """Top-k experts and their gate weights from float32 router logits, by `moe.gating`
  (`scaling.kernels.router`: softmax_topk, Switch/GShard; topk_softmax, Mixtral).

  Returns expert ids [B, L, K] int32, weights [B, L, K] float32, probs [B, L, E] float32.
  """
  r = router_lib.route_reference(logits_BxLxE, moe.top_k, gating=moe.gating,
                                 renormalize=moe.renormalize)
  return r.ids, r.weights, r.probs


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


def _experts(x, w: ExpertWeights, matmul: Callable) -> jax.Array:
  """The expert FFN with `matmul(rows, weight [E, ., .])` as the batched/grouped product."""
  dt = x.dtype
  gate = (lambda r: matmul(r, w.gate.astype(dt))) if w.gate is not None else None
  h = ffn_hidden(x, lambda r: matmul(r, w.up.astype(dt)), gate)
  return matmul(h, w.down.astype(dt))


def _batched(x_ExNxD, w_ExDxF):
  return jnp.einsum("END,EDF->ENF", x_ExNxD, w_ExDxF)


# --- dispatch implementations: pure functions (x [B, L, D] in the compute dtype) -------------


def einsum_dispatch(x, a: Assignment, cap: int, w: ExpertWeights) -> jax.Array:
  """GShard one-hot dispatch/combine tensors [B, L, E, C]: the simple reference."""
  e = w.up.shape[0]
  slot = jax.nn.one_hot(jnp.where(a.keep, a.pos, cap), cap, dtype=x.dtype)  # dropped -> zeros
  expert = jax.nn.one_hot(a.ids, e, dtype=x.dtype)
  dispatch_BxLxExC = jnp.einsum("BLKE,BLKC->BLEC", expert, slot)
  combine_BxLxExC = jnp.einsum("BLKE,BLKC,BLK->BLEC", expert, slot, a.weights.astype(x.dtype))
  in_ExBxCxD = jnp.einsum("BLEC,BLD->EBCD", dispatch_BxLxExC, x)
  b, d = x.shape[0], x.shape[-1]
  out = _experts(in_ExBxCxD.reshape(e, b * cap, d), w, _batched)
  return jnp.einsum("BLEC,EBCD->BLD", combine_BxLxExC, out.reshape(e, b, cap, d))


def sort_dispatch(x, a: Assignment, cap: int, w: ExpertWeights) -> jax.Array:
  """Token copies sorted by expert through one grouped matmul (`jax.lax.ragged_dot`)."""
  del cap  # `a.keep` already holds the capacity decision
  b, length, d = x.shape
  k, e = a.ids.shape[-1], w.up.shape[0]
  flat_ids = a.ids.reshape(-1)  # [B*L*K] in (row, token, choice) order
  token = jnp.repeat(jnp.arange(b * length), k)
  order = jnp.argsort(flat_ids, stable=True)
  group_sizes = jnp.bincount(flat_ids, length=e).astype(jnp.int32)
  rows = x.reshape(b * length, d)[token[order]] * a.keep.reshape(-1)[order, None].astype(x.dtype)
  out_sorted = _experts(rows, w, lambda r, m: jax.lax.ragged_dot(r, m, group_sizes))
  out = jnp.zeros_like(out_sorted).at[order].set(out_sorted)  # un-sort
  gate = (a.weights * a.keep).reshape(-1, 1).astype(x.dtype)
  return jnp.sum((out * gate).reshape(b, length, k, d), axis=2)


def per_batch_shard(fn: Callable, rules: Mapping[str, str], *args_BxLx, weights=(),
                    weight_specs=(), reduce_axes: tuple[str, ...] = ()):
  """`fn(*args_BxLx, *weights)` on each device's rows of the batch, under `shard_map`.

  Pallas kernels are custom calls that XLA's partitioner cannot split: under plain `jit` on a
  batch sharded over `data`, every device would gather the whole batch and compute all of it.
  Here each device runs the kernels on its own rows (capacity is per sequence, so the result
  is the same); `weights` arrive as `weight_specs` say (gathered over FSDP axes), and outputs
  are summed over `reduce_axes` (the tensor-parallel d_ff shards). No mesh: a plain call.
  """
  if jax.sharding.get_abstract_mesh().empty:
    return fn(*args_BxLx, *weights)

  def local(*a):
    out = fn(*a)
    return jax.lax.psum(out, reduce_axes) if reduce_axes else out

  rows = P(sharding.mesh_axes("batch", rules) or None)  # a prefix of every in/out spec
  return jax.shard_map(local, in_specs=(*[rows] * len(args_BxLx), *weight_specs),
                       out_specs=rows, check_vma=False)(*args_BxLx, *weights)


def _weight_specs(w: ExpertWeights, rules, keep) -> tuple[tuple, tuple[str, ...]]:
  """shard_map specs of (gate, up, down) with only the logical axes in `keep` split, and the
  mesh axes d_ff is split over (the partial sums to add up)."""
  in_spec = sharding.local_spec(IN_AXES, rules, keep)
  out_spec = sharding.local_spec(OUT_AXES, rules, keep)
  gate_spec = in_spec if w.gate is not None else P()
  return (gate_spec, in_spec, out_spec), sharding.spec_axes(in_spec[2])


def _with_gate(w: ExpertWeights, dtype) -> ExpertWeights:
  """A scalar placeholder for a missing gate: shard_map takes arrays, not None."""
  return w if w.gate is not None else w._replace(gate=jnp.zeros((), dtype))


def pallas_dispatch(x, a: Assignment, cap: int, w: ExpertWeights, *,
                    rules: Mapping[str, str], kernels: KernelBackend) -> jax.Array:
  """`scaling.kernels`: permute -> grouped matmuls -> weighted unpermute, per batch shard.

  The plan puts kept choices first, grouped by expert, and dropped ones in a zero tail that
  the grouped matmul skips; the backward passes are gathers (no scatter-add of rows). d_ff
  may be split over the `mlp` rule's axes (tensor parallelism): partial outputs are summed.
  """
  k, e, gated = a.ids.shape[-1], w.up.shape[0], w.gate is not None
  specs, tp = _weight_specs(w, rules, keep=("mlp",))
  kw = kernels.kwargs()

  def local(x, ids, weights, pos, keep, w_gate, w_up, w_down):
    b, length, d = x.shape
    plan = permute_lib.make_plan(ids, e, capacity=cap, pos_GxLxK=pos)
    rows = permute_lib.permute(x.reshape(b * length, d), plan, **kw)  # [B*L*K, D]
    grouped = lambda r, m: gmm_lib.gmm(r, m, plan.group_sizes, **kw)
    out = _experts(rows, ExpertWeights(w_gate if gated else None, w_up, w_down), grouped)
    gate = (weights * keep).reshape(b * length, k)
    return permute_lib.unpermute(out, plan, gate, **kw).reshape(b, length, d)

  return per_batch_shard(local, rules, x, *a, weights=tuple(_with_gate(w, x.dtype)),
                         weight_specs=specs, reduce_axes=tp)


def expert_parallel_dispatch(x, a: Assignment, cap: int, w: ExpertWeights, *,
                             rules: Mapping[str, str], mesh_shape: Mapping[str, int]
                             ) -> jax.Array:
  """Experts split over `sharding.expert_axes`; tokens exchanged with all_to_all."""
  e, gated = w.up.shape[0], w.gate is not None
  ep = sharding.expert_parallel_width(rules, mesh_shape)
  ex = sharding.collective_axes(sharding.expert_axes(rules))
  tok = P(sharding.mesh_axes("batch", rules) or None, None, None)
  specs, tp = _weight_specs(w, rules, keep=("expert", "mlp"))

  def local(x, ids, weights, pos, keep, w_gate, w_up, w_down):
    b, length, d = x.shape
    k = ids.shape[-1]
    # Slot of each kept (token, choice) in a [E, b * C] buffer; dropped ones go nowhere.
    row = jnp.broadcast_to(jnp.arange(b)[:, None, None], ids.shape)
    slot = ids * (b * cap) + row * cap + pos
    slot = jnp.where(keep, slot, e * b * cap).reshape(-1)
    src = jnp.repeat(x.reshape(b * length, d), k, axis=0)
    buf = jnp.zeros((e * b * cap, d), x.dtype).at[slot].set(src, mode="drop")
    # [E, bC, D] -> to the owners of each expert: [E/ep, ep * bC, D].
    buf = buf.reshape(ep, e // ep, b * cap, d)
    buf = jax.lax.all_to_all(buf, ex, 0, 0, tiled=False)
    buf = jnp.swapaxes(buf, 0, 1).reshape(e // ep, ep * b * cap, d)
    out = _experts(buf, ExpertWeights(w_gate if gated else None, w_up, w_down), _batched)
    if tp:
      out = jax.lax.psum(out, tp)
    out = jnp.swapaxes(out.reshape(e // ep, ep, b * cap, d), 0, 1)
    out = jax.lax.all_to_all(out, ex, 0, 0, tiled=False).reshape(e * b * cap, d)
    picked = out.at[slot].get(mode="fill", fill_value=0).reshape(b, length, k, d)
    return jnp.sum(picked * (weights * keep)[..., None].astype(x.dtype), axis=2)

  fn = jax.shard_map(local, in_specs=(tok, tok, tok, tok, tok, *specs), out_specs=tok,
                     check_vma=False)
  return fn(x, *a, *_with_gate(w, x.dtype))


def dispatch(impl: str, x, a: Assignment, cap: int, w: ExpertWeights, *,
             rules: Mapping[str, str], kernels: KernelBackend,
             mesh_shape: Mapping[str, int] | None = None) -> jax.Array:
  """The MoE output [B, L, D] by `impl` ("einsum" | "sort" | "pallas"); expert parallelism
  whenever the mesh (default: the one being traced under) splits the experts."""
  mesh_shape = sharding.current_mesh_shape() if mesh_shape is None else mesh_shape
  if sharding.expert_parallel_width(rules, mesh_shape) > 1:
    return expert_parallel_dispatch(x, a, cap, w, rules=rules, mesh_shape=mesh_shape)
  if impl == "einsum":
    return einsum_dispatch(x, a, cap, w)
  if impl == "pallas":
    return pallas_dispatch(x, a, cap, w, rules=rules, kernels=kernels)
  return sort_dispatch(x, a, cap, w)


class MoeMlp(nnx.Module):
  """Routed experts (+ optional always-on shared experts) in place of the dense MLP.

  `kernels`: where the `pallas` dispatch's kernels run, resolved once here (a static field of
  the layer, so part of its graph definition and of every jit trace of it).
  """

  @no_eager_sharding
  def __init__(self, m: ml_collections.ConfigDict, rules: Mapping[str, str], *, rngs: nnx.Rngs,
               kernels: KernelBackend | None = None):
    self.m, self.rules = m, rules
    self.kernels = kernels or KernelBackend.resolve()
    moe = m.moe
    d, e, f = m.d_model, moe.num_experts, expert_d_ff(m)
    pdt = dtype_of(m.param_dtype)
    std = mup.hidden_std(m, m.init_std)  # the experts are hidden matrices under μP
    std_out = std / math.sqrt(2 * m.num_layers)
    init = lambda std, names, shape: nnx.Param(normal(std, names)(rngs.params(), shape, pdt))
    # Router in float32 whatever the compute dtype (Fedus et al. 2022, Sec. 2.4). Under μP it is
    # a readout (fan-in the width, fan-out the expert count): its logits carry the 1/r.
    self.router = init(m.init_std, ("embed", None), (d, e))
    self.w_up = init(std, IN_AXES, (e, d, f))
    if m.mlp == "swiglu":
      self.w_gate = init(std, IN_AXES, (e, d, f))
    self.w_down = init(std_out, OUT_AXES, (e, f, d))
    if moe.num_shared_experts:
      # n shared experts of width F are one dense MLP of width n F (DeepSeekMoE, Dai et al. 2024).
      shared = ml_collections.ConfigDict(m.to_dict())
      shared.d_ff = moe.num_shared_experts * f
      self.shared = Mlp(shared, rules, rngs=rngs)

  def expert_weights(self) -> ExpertWeights:
    return ExpertWeights(self.w_gate[...] if self.m.mlp == "swiglu" else None, self.w_up[...],
                         self.w_down[...])

  def assign(self, logits_BxLxE: jax.Array, cap: int) -> tuple[Assignment, jax.Array]:
    """Routing of float32 logits into an `Assignment` and the router probabilities [B, L, E];
    the `pallas` dispatch routes with the fused kernel (per batch shard), the others with its
    reference."""
    moe = self.m.moe
    if moe.dispatch == "pallas":
      kw = self.kernels.kwargs()

      def kernel_route(z):
        r = router_lib.route(z, moe.top_k, gating=moe.gating, renormalize=moe.renormalize,
                             **kw)
        return r.ids, r.weights, r.probs

      ids, weights, probs = per_batch_shard(kernel_route, self.rules, logits_BxLxE)
    else:
      ids, weights, probs = route(logits_BxLxE, moe)
    pos = slot_positions(ids, moe.num_experts)
    return Assignment(ids, weights, pos, pos < cap), probs

  def __call__(self, x_BxLxD: jax.Array, *, train: bool = False, rng: jax.Array | None = None):
    m, moe = self.m, self.m.moe
    router_in = x_BxLxD.astype(jnp.float32)
    if train and moe.router_jitter > 0 and rng is not None:
      # Multiplicative input jitter (Fedus et al. 2022, Sec. 2.4 / Table 2).
      eps = moe.router_jitter
      router_in = router_in * jax.random.uniform(rng, router_in.shape, jnp.float32,
                                                 1.0 - eps, 1.0 + eps)
    logits_BxLxE = router_in @ self.router[...].astype(jnp.float32)
    if (mult := mup.output_multiplier(m)) is not None:
      logits_BxLxE = logits_BxLxE * mult
    cap = capacity(m, x_BxLxD.shape[1], train)
    a, probs = self.assign(logits_BxLxE, cap)
    dtype = dtype_of(m.dtype)
    y = dispatch(moe.dispatch, x_BxLxD.astype(dtype), a, cap, self.expert_weights(),
                 rules=self.rules, kernels=self.kernels)
    if moe.num_shared_experts:
      y = y + self.shared(x_BxLxD)

    e = moe.num_experts
    frac = jnp.mean(jax.nn.one_hot(a.ids, e, dtype=jnp.float32), axis=(0, 1, 2))
    entropy = -jnp.mean(jnp.sum(probs * jnp.log(probs + 1e-9), axis=-1))
    aux = {"load_balance": load_balance_loss(probs, a.ids),
           "router_z": router_z_loss(logits_BxLxE),
           "expert_fraction": frac, "dropped_fraction": 1.0 - jnp.mean(a.keep.astype(jnp.float32)),
           "router_entropy": entropy}
    return y.astype(dtype), aux
