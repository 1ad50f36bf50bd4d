"""Token permutation for MoE: token rows -> expert-contiguous rows -> weighted combine back.

A `Plan` is a permutation of the T*K (token, choice) pairs: `dest[t*K + k]` is the row of the
expert-sorted buffer [M = T*K, D] that holds choice k of token t, and `src` is its inverse.
Kept choices fill rows [0, num_kept) grouped by expert (group sizes `group_sizes`, the ragged
groups of the grouped matmul); choices dropped by capacity fill the tail [num_kept, M) and are
zero rows, so the grouped matmul skips them (its rows past sum(group_sizes) are zeros).
The plan needs no sort: within its routing group a kept choice's rank in its expert's queue is
its slot position (`moe.slot_positions`, GShard priority order), so
dest = expert offset + rows of the same expert in earlier groups + slot position, and `src`
is one int32 scatter of arange(M) at `dest`.

  permute(x, plan)        rows[j] = x[src[j] // K] for j < num_kept, else 0        [M, D]
  unpermute(rows, plan, g) y[t] = sum_k g[t, k] rows[dest[t*K + k]]                 [T, D]

Both have custom VJPs whose backward passes are gathers with the inverse permutation, never a
scatter-add of [*, D] rows: d_x = unpermute(d_rows, plan, keep) (gather by `dest`), d_rows =
permute(d_y, plan) scaled by g[src[j]] (gather by `src`), and d_g[t, k] = <d_y[t],
rows[dest[t*K + k]]> (a gather and a row dot). The Pallas programs are Triton-style: one
program per [block_rows, block_d] tile, masked pointer loads for ragged edges.

Shapes: T tokens, K top_k, M = T*K sorted rows, D d_model, E experts, G routing groups (batch
rows) of L tokens each (T = G*L).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from scaling.kernels.backend import next_pow2, resolve


class Plan(NamedTuple):
  src: jax.Array  # [M] int32 flat (token*K + choice) index held by each sorted row
  dest: jax.Array  # [T*K] int32 sorted row of each flat (token, choice); dest[src] = arange(M)
  group_sizes: jax.Array  # [E] int32 kept rows per expert, in expert order
  num_kept: jax.Array  # [1] int32 sum(group_sizes): rows past it are dropped choices
  keep: jax.Array  # [T, K] bool whether each choice is kept (capacity)
  top_k: int


jax.tree_util.register_pytree_node(
    Plan, lambda p: (tuple(p[:5]), p.top_k), lambda k, c: Plan(*c, top_k=k))


def slot_positions(ids_GxLxK: jax.Array, num_experts: int) -> jax.Array:
  """Rank of each (token, choice) in its expert's queue within its group [G, L, K] int32:
  choice-major then token (GShard priority; the same as `scaling.models.moe.slot_positions`)."""
  g, length, k = ids_GxLxK.shape
  flat = jnp.swapaxes(ids_GxLxK, 1, 2).reshape(g, k * length)
  onehot = jax.nn.one_hot(flat, num_experts, dtype=jnp.int32)
  pos = jnp.sum((jnp.cumsum(onehot, axis=1) - 1) * onehot, axis=-1)
  return jnp.swapaxes(pos.reshape(g, k, length), 1, 2)


def make_plan(ids_GxLxK: jax.Array, num_experts: int, *, capacity: int | None = None,
              pos_GxLxK: jax.Array | None = None) -> Plan:
  """Permutation plan from routing ids [G, L, K]; `capacity` slots per expert per group (None:
  dropless). `pos_GxLxK` (slot positions) may be passed when already computed."""
  g, length, k = ids_GxLxK.shape
  m = g * length * k
  if pos_GxLxK is None:
    pos_GxLxK = slot_positions(ids_GxLxK, num_experts)
  keep = (pos_GxLxK < capacity if capacity is not None
          else jnp.ones(ids_GxLxK.shape, bool))
  # Kept choices per (group, expert): a [G*L*K] int32 scatter-add into [G, E].
  grp = jnp.broadcast_to(jnp.arange(g)[:, None, None], ids_GxLxK.shape)
  per_group = jnp.zeros((g, num_experts), jnp.int32).at[grp, ids_GxLxK].add(
      keep.astype(jnp.int32))
  group_sizes = jnp.sum(per_group, axis=0, dtype=jnp.int32)
  expert_start = jnp.cumsum(group_sizes, dtype=jnp.int32) - group_sizes  # [E]
  earlier = jnp.cumsum(per_group, axis=0, dtype=jnp.int32) - per_group  # [G, E]
  start = expert_start[None, :] + earlier  # first row of (group, expert)
  dest_kept = jnp.take_along_axis(start[:, None, :], ids_GxLxK.reshape(g, 1, -1),
                                  axis=-1).reshape(ids_GxLxK.shape) + pos_GxLxK
  num_kept = jnp.sum(group_sizes, dtype=jnp.int32)
  flat_keep = keep.reshape(-1)
  dropped_rank = jnp.cumsum(~flat_keep, dtype=jnp.int32) - (~flat_keep).astype(jnp.int32)
  dest = jnp.where(flat_keep, dest_kept.reshape(-1), num_kept + dropped_rank).astype(jnp.int32)
  src = jnp.zeros((m,), jnp.int32).at[dest].set(jnp.arange(m, dtype=jnp.int32),
                                                 unique_indices=True)
  return Plan(src, dest, group_sizes, num_kept.reshape(1), keep.reshape(-1, k), k)


# --- pure-JAX references ------------------------------------------------------------------


def permute_reference(x_TxD: jax.Array, plan: Plan) -> jax.Array:
  """rows [M, D]: x[src // K] for kept rows, zeros for the dropped tail (autodiff backward)."""
  m = plan.src.shape[0]
  valid = jnp.arange(m) < plan.num_kept[0]
  return jnp.where(valid[:, None], x_TxD[plan.src // plan.top_k], 0).astype(x_TxD.dtype)


def unpermute_reference(rows_MxD: jax.Array, plan: Plan, gate_TxK: jax.Array) -> jax.Array:
  """y [T, D] = sum_k gate[t, k] rows[dest[t*K + k]] (float32 sum, output in rows' dtype)."""
  t, k = gate_TxK.shape
  picked = rows_MxD[plan.dest].reshape(t, k, -1).astype(jnp.float32)
  return jnp.einsum("tkd,tk->td", picked, gate_TxK.astype(jnp.float32)).astype(rows_MxD.dtype)


# --- Pallas (Triton-style) kernels ------------------------------------------------------


def _gather_kernel(src_ref, scale_ref, num_ref, x_ref, out_ref, *, m: int, d: int, k: int,
                   bm: int, bd: int, scaled: bool):
  """out[j] = scale[src[j]] * x[src[j] // K] for j < num, else 0. Tile [bm, bd]."""
  i, jd = pl.program_id(0), pl.program_id(1)
  rows = i * bm + jnp.arange(bm)
  cols = jd * bd + jnp.arange(bd)
  row_ok = rows < m
  col_ok = cols < d
  live = row_ok & (rows < num_ref[0])
  s = plgpu.load(src_ref.at[rows], mask=live, other=0)
  tok = jax.lax.div(s, jnp.int32(k))  # s >= 0: truncating division (no floor-div lowering)
  v = plgpu.load(x_ref.at[tok[:, None], cols[None, :]], mask=live[:, None] & col_ok[None, :],
                 other=0).astype(jnp.float32)
  if scaled:
    v = v * plgpu.load(scale_ref.at[s], mask=live, other=0).astype(jnp.float32)[:, None]
  plgpu.store(out_ref.at[rows[:, None], cols[None, :]], v.astype(out_ref.dtype),
              mask=row_ok[:, None] & col_ok[None, :])


def _combine_kernel(dest_ref, gate_ref, rows_ref, out_ref, *, t: int, d: int, k: int, bt: int,
                    bd: int):
  """out[t] = sum_k gate[t, k] rows[dest[t*K + k]] (float32 accumulation). Tile [bt, bd]."""
  i, jd = pl.program_id(0), pl.program_id(1)
  toks = i * bt + jnp.arange(bt)
  cols = jd * bd + jnp.arange(bd)
  tok_ok = toks < t
  col_ok = cols < d
  acc = jnp.zeros((bt, bd), jnp.float32)
  for c in range(k):  # static: top_k <= 8 in practice
    flat = toks * k + c
    g = plgpu.load(gate_ref.at[flat], mask=tok_ok, other=0).astype(jnp.float32)
    # Zero gates (dropped choices) skip their row's memory traffic.
    live = tok_ok & (g != 0)
    r = plgpu.load(dest_ref.at[flat], mask=live, other=0)
    v = plgpu.load(rows_ref.at[r[:, None], cols[None, :]], mask=live[:, None] & col_ok[None, :],
                   other=0)
    acc += g[:, None] * v.astype(jnp.float32)
  plgpu.store(out_ref.at[toks[:, None], cols[None, :]], acc.astype(out_ref.dtype),
              mask=tok_ok[:, None] & col_ok[None, :])


def _gate_grad_kernel(dest_ref, rows_ref, dy_ref, out_ref, *, t: int, d: int, k: int,
                      bt: int, bd: int):
  """out[t, c] = <dy[t], rows[dest[t*K + c]]> (every choice: a kept choice with gate exactly 0
  still has a gradient)."""
  i = pl.program_id(0)
  toks = i * bt + jnp.arange(bt)
  tok_ok = toks < t
  kp = next_pow2(k)
  kcols = jnp.arange(kp)
  out = jnp.zeros((bt, kp), jnp.float32)
  for c in range(k):
    flat = toks * k + c
    r = plgpu.load(dest_ref.at[flat], mask=tok_ok, other=0)

    def body(jd, acc, r=r, live=tok_ok):
      cols = jd * bd + jnp.arange(bd)
      msk = live[:, None] & (cols < d)[None, :]
      a = plgpu.load(dy_ref.at[toks[:, None], cols[None, :]], mask=msk, other=0)
      b = plgpu.load(rows_ref.at[r[:, None], cols[None, :]], mask=msk, other=0)
      return acc + jnp.sum(a.astype(jnp.float32) * b.astype(jnp.float32), axis=1)

    dot = jax.lax.fori_loop(0, pl.cdiv(d, bd), body, jnp.zeros((bt,), jnp.float32))
    out = jnp.where(kcols[None, :] == c, dot[:, None], out)
  plgpu.store(out_ref.at[toks[:, None], kcols[None, :]], out.astype(out_ref.dtype),
              mask=tok_ok[:, None] & (kcols < k)[None, :])


def _blocks(n: int, block: int) -> int:
  return min(block, next_pow2(n))


def _gather_call(x_TxD, src, scale, num, k, block, interpret, m):
  t, d = x_TxD.shape
  bm, bd = _blocks(m, block[0]), _blocks(d, block[1])
  scaled = scale is not None
  kernel = functools.partial(_gather_kernel, m=m, d=d, k=k, bm=bm, bd=bd, scaled=scaled)
  return pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((m, d), x_TxD.dtype),
      grid=(pl.cdiv(m, bm), pl.cdiv(d, bd)), interpret=interpret,
      compiler_params=plgpu.CompilerParams(num_warps=4), name="moe_permute",
  )(src, scale if scaled else jnp.zeros((1,), jnp.float32), num, x_TxD)


def _per_token_call(kernel_fn, name: str, rows_MxD, gate_TxK, block, interpret, *,
                    out: jax.ShapeDtypeStruct, tile_d: bool, operands: tuple):
  """A kernel with one program per block of `bt` tokens (and of `bd` d_model columns when
  `tile_d`) that reads expert-sorted rows [M, D] by `dest` for each token's K choices."""
  t, k = gate_TxK.shape
  d = rows_MxD.shape[1]
  bt, bd = _blocks(t, block[0]), _blocks(d, block[1])
  grid = (pl.cdiv(t, bt), pl.cdiv(d, bd)) if tile_d else (pl.cdiv(t, bt),)
  return pl.pallas_call(
      functools.partial(kernel_fn, t=t, d=d, k=k, bt=bt, bd=bd), out_shape=out, grid=grid,
      interpret=interpret, compiler_params=plgpu.CompilerParams(num_warps=4), name=name,
  )(*operands)


def _combine_call(rows_MxD, dest, gate_TxK, block, interpret):
  """y [T, D] = sum_k gate[t, k] rows[dest[t*K + k]] (`_combine_kernel`)."""
  out = jax.ShapeDtypeStruct((gate_TxK.shape[0], rows_MxD.shape[1]), rows_MxD.dtype)
  return _per_token_call(_combine_kernel, "moe_unpermute", rows_MxD, gate_TxK, block, interpret,
                         out=out, tile_d=True, operands=(dest, gate_TxK.reshape(-1), rows_MxD))


def _gate_grad_call(rows_MxD, dest, gate_TxK, dy_TxD, block, interpret):
  """d_gate [T, K] = <dy[t], rows[dest[t*K + k]]> (`_gate_grad_kernel`; it loops over D)."""
  out = jax.ShapeDtypeStruct(gate_TxK.shape, gate_TxK.dtype)
  return _per_token_call(_gate_grad_kernel, "moe_unpermute_gate_grad", rows_MxD, gate_TxK,
                         block, interpret, out=out, tile_d=False,
                         operands=(dest, rows_MxD, dy_TxD))


# Custom VJPs. Integer plan arrays get no cotangent (None).


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _permute(x_TxD, src, dest, num, k, block, interpret):
  return _gather_call(x_TxD, src, None, num, k, block, interpret, src.shape[0])


def _permute_fwd(x_TxD, src, dest, num, k, block, interpret):
  return _permute(x_TxD, src, dest, num, k, block, interpret), (src, dest, num)


def _permute_bwd(k, block, interpret, res, d_rows):
  src, dest, num = res
  t = dest.shape[0] // k
  # dx[t] = sum of the cotangents of its kept copies: gather by dest (the inverse permutation).
  kept = (dest < num[0]).astype(jnp.float32).reshape(t, k)
  dx = _combine_call(d_rows, dest, kept, block, interpret)
  return dx, None, None, None


_permute.defvjp(_permute_fwd, _permute_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _unpermute(rows_MxD, gate_TxK, src, dest, num, block, interpret):
  return _combine_call(rows_MxD, dest, gate_TxK, block, interpret)


def _unpermute_fwd(rows_MxD, gate_TxK, src, dest, num, block, interpret):
  out = _combine_call(rows_MxD, dest, gate_TxK, block, interpret)
  return out, (rows_MxD, gate_TxK, src, dest, num)


def _unpermute_bwd(block, interpret, res, dy_TxD):
  rows_MxD, gate_TxK, src, dest, num = res
  k = gate_TxK.shape[1]
  m = src.shape[0]
  all_rows = jnp.full((1,), m, jnp.int32)
  # d_rows[j] = gate[src[j]] * dy[src[j] // K]: gather by src (the forward permutation).
  d_rows = _gather_call(dy_TxD.astype(rows_MxD.dtype), src, gate_TxK.reshape(-1), all_rows, k,
                        block, interpret, m)
  d_gate = _gate_grad_call(rows_MxD, dest, gate_TxK, dy_TxD, block, interpret)
  return d_rows, d_gate, None, None, None


_unpermute.defvjp(_unpermute_fwd, _unpermute_bwd)


def permute(x_TxD: jax.Array, plan: Plan, *, block: tuple[int, int] = (64, 128),
            interpret: bool | None = None, platform: str | None = None) -> jax.Array:
  """Token rows [T, D] -> expert-sorted rows [M = T*K, D] (dropped tail zero).

  block: (rows, d_model columns) per Pallas program, powers of two (clipped to the shape).
  Backward: a gather of the cotangent rows by `dest` summed over the K copies.
  interpret, platform: see `scaling.kernels.backend`.
  """
  impl, interp = resolve(interpret, platform=platform)
  if impl == "reference":
    return permute_reference(x_TxD, plan)
  return _permute(x_TxD, plan.src, plan.dest, plan.num_kept, plan.top_k, tuple(block), interp)


def unpermute(rows_MxD: jax.Array, plan: Plan, gate_TxK: jax.Array, *,
              block: tuple[int, int] = (64, 128), interpret: bool | None = None,
              platform: str | None = None) -> jax.Array:
  """Expert-sorted rows [M, D] -> tokens [T, D]: y[t] = sum_k gate[t, k] rows[dest[t, k]].

  gate: [T, K] combine weights (zero for dropped choices, whose rows are then not read).
  Differentiable in rows and gate. Accumulates in float32; output in rows' dtype.
  interpret, platform: see `scaling.kernels.backend`.
  """
  impl, interp = resolve(interpret, platform=platform)
  if impl == "reference":
    return unpermute_reference(rows_MxD, plan, gate_TxK)
  return _unpermute(rows_MxD, gate_TxK, plan.src, plan.dest, plan.num_kept, tuple(block),
                    interp)
