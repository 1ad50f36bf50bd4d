"""Fused MoE router: logits -> probabilities, top-k expert ids and gate weights, expert counts.

One Pallas program per block of tokens reads the block's router logits once and writes the
softmax probabilities, the top-k ids and weights, and the block's per-expert assignment counts;
the counts of all blocks are summed afterwards (a [blocks, E] reduction) into the group sizes
and offsets the grouped matmul needs. Top-k is k rounds of (row max, first index attaining it,
mask it out): k <= 8 in practice, and ties go to the lowest expert id as in `jax.lax.top_k`.

Gating (same as `scaling.models.moe.route`):
  softmax_topk  softmax over all experts, keep the k largest probabilities, renormalised to sum
                1 when `renormalize` (Switch, Fedus et al. 2022; GShard, Lepikhin et al. 2021).
  topk_softmax  softmax over the k largest logits (Mixtral, Jiang et al. 2024, Eq. 1).

The backward pass (custom VJP) recomputes the differentiable part, weights and probabilities as
functions of the logits at the forward pass's ids, in plain JAX: it is a [T, E] elementwise
computation that XLA fuses well, and the discrete top-k has no gradient.

Shapes: T tokens, E experts, K top_k. Logits are float32.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from scaling.kernels.backend import next_pow2, resolve


class Routing(NamedTuple):
  ids: jax.Array  # [T, K] int32 expert of each choice, best first
  weights: jax.Array  # [T, K] float32 gate weight of each choice
  probs: jax.Array  # [T, E] float32 softmax over all experts (for the load-balance loss)
  counts: jax.Array  # [E] int32 choices assigned to each expert (before capacity)
  offsets: jax.Array  # [E] int32 exclusive prefix sum of counts: first row of each expert


def _weights_and_probs(logits_TxE: jax.Array, ids_TxK: jax.Array, gating: str,
                       renormalize: bool) -> tuple[jax.Array, jax.Array]:
  """Gate weights [T, K] and probabilities [T, E] at given ids: differentiable in the logits."""
  probs = jax.nn.softmax(logits_TxE, axis=-1)
  if gating == "topk_softmax":
    weights = jax.nn.softmax(jnp.take_along_axis(logits_TxE, ids_TxK, axis=-1), axis=-1)
  else:
    weights = jnp.take_along_axis(probs, ids_TxK, axis=-1)
    if renormalize:
      weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
  return weights, probs


def _counts_and_offsets(ids_TxK: jax.Array, num_experts: int) -> tuple[jax.Array, jax.Array]:
  counts = jnp.bincount(ids_TxK.reshape(-1), length=num_experts).astype(jnp.int32)
  return counts, jnp.cumsum(counts, dtype=jnp.int32) - counts


def route_reference(logits_TxE: jax.Array, top_k: int, *, gating: str = "softmax_topk",
                    renormalize: bool = True) -> Routing:
  """Pure-JAX router, the reference for the kernel and the routing of the `einsum` and `sort`
  MoE dispatches (`scaling.models.moe.route`). Any leading shape: logits [..., E] give ids,
  weights [..., K] and probs [..., E]; counts and offsets are over all of them."""
  scores = logits_TxE if gating == "topk_softmax" else jax.nn.softmax(logits_TxE, axis=-1)
  _, ids = jax.lax.top_k(scores, top_k)
  ids = ids.astype(jnp.int32)
  weights, probs = _weights_and_probs(logits_TxE, ids, gating, renormalize)
  counts, offsets = _counts_and_offsets(ids, logits_TxE.shape[-1])
  return Routing(ids, weights, probs, counts, offsets)


def _router_kernel(logits_ref, ids_ref, weights_ref, probs_ref, counts_ref, *, num_tokens: int,
                   num_experts: int, top_k: int, block_t: int, gating: str, renormalize: bool):
  """One block of `block_t` tokens. Experts padded to a power of two with -inf logits."""
  i = pl.program_id(0)
  e_pad, k_pad = next_pow2(num_experts), next_pow2(top_k)
  rows = i * block_t + jnp.arange(block_t)
  cols = jnp.arange(e_pad)
  kcols = jnp.arange(k_pad)
  row_ok = rows < num_tokens
  col_ok = cols < num_experts
  mask = row_ok[:, None] & col_ok[None, :]
  z = plgpu.load(logits_ref.at[rows[:, None], cols[None, :]], mask=mask, other=0.0)
  z = z.astype(jnp.float32)
  # Padded experts get -inf (probability 0, never picked); padded tokens stay finite (no NaN).
  z = jnp.where(col_ok[None, :], z, -jnp.inf)
  ez = jnp.exp(z - jnp.max(z, axis=1)[:, None])
  probs = ez / jnp.sum(ez, axis=1)[:, None]
  scores = z if gating == "topk_softmax" else probs
  # Padded experts must lose even to real experts whose probability underflowed to 0.
  scores = jnp.where(col_ok[None, :], scores, -jnp.inf)

  ids = jnp.zeros((block_t, k_pad), jnp.int32)
  vals = jnp.zeros((block_t, k_pad), jnp.float32)
  counts = jnp.zeros((e_pad,), jnp.int32)
  for j in range(top_k):  # static: k rounds of argmax
    best = jnp.max(scores, axis=1)
    idx = jnp.min(jnp.where(scores == best[:, None], cols[None, :], e_pad), axis=1)
    hit = cols[None, :] == idx[:, None]
    ids = jnp.where(kcols[None, :] == j, idx[:, None], ids)
    vals = jnp.where(kcols[None, :] == j, best[:, None], vals)
    counts = counts + jnp.sum((hit & row_ok[:, None]).astype(jnp.int32), axis=0)
    scores = jnp.where(hit, -jnp.inf, scores)

  k_ok = kcols < top_k
  if gating == "topk_softmax":
    # vals[:, 0] is the largest kept logit: a stable softmax over the k kept logits.
    ev = jnp.where(k_ok[None, :], jnp.exp(vals - jnp.max(vals, axis=1)[:, None]), 0.0)
    weights = ev / jnp.sum(ev, axis=1)[:, None]
  else:
    weights = jnp.where(k_ok[None, :], vals, 0.0)
    if renormalize:
      weights = weights / jnp.sum(weights, axis=1)[:, None]

  kmask = row_ok[:, None] & k_ok[None, :]
  plgpu.store(ids_ref.at[rows[:, None], kcols[None, :]], ids, mask=kmask)
  plgpu.store(weights_ref.at[rows[:, None], kcols[None, :]], weights, mask=kmask)
  plgpu.store(probs_ref.at[rows[:, None], cols[None, :]], probs, mask=mask)
  plgpu.store(counts_ref.at[i, cols], counts, mask=col_ok)


def _route_kernel_call(logits_TxE, top_k, gating, renormalize, block_t, interpret):
  t, e = logits_TxE.shape
  block_t = min(block_t, next_pow2(t))
  blocks = pl.cdiv(t, block_t)
  kernel = functools.partial(_router_kernel, num_tokens=t, num_experts=e, top_k=top_k,
                             block_t=block_t, gating=gating, renormalize=renormalize)
  ids, weights, probs, block_counts = pl.pallas_call(
      kernel,
      out_shape=(jax.ShapeDtypeStruct((t, top_k), jnp.int32),
                 jax.ShapeDtypeStruct((t, top_k), jnp.float32),
                 jax.ShapeDtypeStruct((t, e), jnp.float32),
                 jax.ShapeDtypeStruct((blocks, e), jnp.int32)),
      grid=(blocks,),
      interpret=interpret,
      compiler_params=plgpu.CompilerParams(num_warps=4),
      name="moe_router",
  )(logits_TxE)
  counts = jnp.sum(block_counts, axis=0, dtype=jnp.int32)
  return ids, weights, probs, counts, jnp.cumsum(counts, dtype=jnp.int32) - counts


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5))
def _route_kernel(logits_TxE, top_k, gating, renormalize, block_t, interpret):
  return _route_kernel_call(logits_TxE, top_k, gating, renormalize, block_t, interpret)


def _route_kernel_fwd(logits_TxE, top_k, gating, renormalize, block_t, interpret):
  out = _route_kernel_call(logits_TxE, top_k, gating, renormalize, block_t, interpret)
  return out, (logits_TxE, out[0])


def _route_kernel_bwd(top_k, gating, renormalize, block_t, interpret, res, cts):
  logits_TxE, ids = res
  d_weights, d_probs = cts[1], cts[2]
  _, vjp = jax.vjp(lambda z: _weights_and_probs(z, ids, gating, renormalize), logits_TxE)
  return vjp((d_weights, d_probs))


_route_kernel.defvjp(_route_kernel_fwd, _route_kernel_bwd)


def route(logits_TxE: jax.Array, top_k: int, *, gating: str = "softmax_topk",
          renormalize: bool = True, block_tokens: int = 64,
          interpret: bool | None = None, platform: str | None = None) -> Routing:
  """Router top-k from float32 logits [T, E] (or any leading shape [..., E]: the kernel sees
  them flattened to [T, E]); see the module docstring.

  block_tokens: tokens per Pallas program (a power of two; clipped to the token count).
  interpret, platform: see `scaling.kernels.backend` (None: GPU kernel on GPU, reference
  elsewhere; `platform` overrides the default backend).
  Differentiable in the logits through `weights` and `probs`.
  """
  if gating not in ("softmax_topk", "topk_softmax"):
    raise ValueError(f"gating={gating!r}; choose 'softmax_topk' or 'topk_softmax'")
  impl, interp = resolve(interpret, platform=platform)
  if impl != "reference" and block_tokens & (block_tokens - 1):
    raise ValueError(f"block_tokens={block_tokens} must be a power of two")
  # Both paths see [T, E], so the reference here is the kernel's computation, shape for shape.
  lead, e = logits_TxE.shape[:-1], logits_TxE.shape[-1]
  flat = logits_TxE.reshape(-1, e)
  if impl == "reference":
    r = route_reference(flat, top_k, gating=gating, renormalize=renormalize)
  else:
    r = Routing(*_route_kernel(flat.astype(jnp.float32), top_k, gating, renormalize,
                               block_tokens, interp))
  return r._replace(ids=r.ids.reshape(*lead, top_k), weights=r.weights.reshape(*lead, top_k),
                    probs=r.probs.reshape(*lead, e))
