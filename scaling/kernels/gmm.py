"""Grouped matrix multiplication (gmm) for the expert FFN, with its transposed form (tgmm).

  gmm(lhs [M, K], rhs [G, K, N], group_sizes [G]) -> [M, N]
      rows [off_g, off_g + size_g) of lhs times rhs[g]; rows past sum(group_sizes) are zero.
  tgmm(lhs [M, K], dout [M, N], group_sizes [G]) -> [G, K, N]
      lhs[rows of g]^T @ dout[rows of g]; zero for an empty group.
The custom VJP of gmm: d_lhs = gmm(d_out, rhs^T) and d_rhs = tgmm(lhs, d_out) (as in megablox,
`jax.experimental.pallas.ops.tpu.megablox.ops`). Implementations (`scaling.kernels.backend`):
  TPU  megablox `gmm`/`tgmm` (Pallas TPU/Mosaic) under this module's custom VJP, with M padded
       to the m tile and rows past sum(group_sizes) zeroed (megablox leaves them unwritten).
  GPU  the Pallas programs below (Triton backend), one [bm, bn] output tile per program.
  CPU  `jax.lax.ragged_dot` (correct, but a masked dense product: ~G x the FLOPs on XLA:CPU).

GPU gmm schedule: the grid's first axis enumerates (group, m-tile) visits. A tile of bm rows
that straddles a group boundary is visited once per group it overlaps and each visit stores
only its group's rows (masked stores), so visits never write the same element; empty groups
get no visit. Rows past sum(group_sizes) are one more pseudo-group whose visits store zeros
without any loads or FLOPs (capacity-dropped rows cost nothing). The number of visits is at
most cdiv(M, bm) + G, a static grid size; surplus grid points store nothing. This is the
megablox schedule (its `make_group_metadata`) re-derived for a Triton grid. tgmm: one program
per (group, k-tile, n-tile), looping over the group's m-tiles with masked loads.

Accumulation is float32; outputs default to the lhs dtype (gmm) and the rhs dtype (d_rhs), as
`jax.lax.ragged_dot` does. float32 products use full float32 precision (no TF32).
"""

from __future__ import annotations

import functools
import importlib

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from scaling.kernels.backend import next_pow2, resolve

Tiling = tuple[int, int, int]  # (bm, bk, bn): rows, contraction, columns per program


# --- references -----------------------------------------------------------------------------


def gmm_reference(lhs_MxK: jax.Array, rhs_GxKxN: jax.Array, group_sizes_G: jax.Array,
                  preferred_element_type=None) -> jax.Array:
  """`jax.lax.ragged_dot` with rows past sum(group_sizes) set to zero explicitly."""
  out = jax.lax.ragged_dot(lhs_MxK, rhs_GxKxN, group_sizes_G,
                           preferred_element_type=preferred_element_type)
  live = jnp.arange(lhs_MxK.shape[0]) < jnp.sum(group_sizes_G)
  return jnp.where(live[:, None], out, 0).astype(out.dtype)


def tgmm_reference(lhs_MxK: jax.Array, dout_MxN: jax.Array, group_sizes_G: jax.Array,
                   preferred_element_type=None) -> jax.Array:
  """[G, K, N] per-group lhs^T dout, as a one-hot-masked einsum (G x the FLOPs: tests only)."""
  g = group_sizes_G.shape[0]
  ends = jnp.cumsum(group_sizes_G)
  row = jnp.arange(lhs_MxK.shape[0])
  member = ((row[:, None] < ends[None, :]) & (row[:, None] >= (ends - group_sizes_G)[None, :]))
  out = jnp.einsum("mg,mk,mn->gkn", member.astype(jnp.float32), lhs_MxK.astype(jnp.float32),
                   dout_MxN.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
  del g
  return out.astype(preferred_element_type or lhs_MxK.dtype)


# --- Pallas GPU (Triton) kernels ----------------------------------------------------------


def _visits(group_sizes_G: jax.Array, m: int, bm: int):
  """Visit schedule: for each grid point v, its group (G = the zero tail, G+1 = nothing) and
  m-tile; plus per-group row starts and ends [G + 2]."""
  g = group_sizes_G.shape[0]
  sizes = jnp.concatenate([group_sizes_G.astype(jnp.int32),
                           (m - jnp.sum(group_sizes_G, dtype=jnp.int32))[None]])
  ends = jnp.cumsum(sizes, dtype=jnp.int32)
  starts = ends - sizes
  first = starts // bm
  tiles = jnp.where(sizes > 0, (ends - 1) // bm - first + 1, 0)
  tile_end = jnp.cumsum(tiles, dtype=jnp.int32)
  num_visits = pl.cdiv(m, bm) + g
  v = jnp.arange(num_visits, dtype=jnp.int32)
  group = jnp.searchsorted(tile_end, v, side="right").astype(jnp.int32)  # G+1 when v is surplus
  gc = jnp.minimum(group, g)
  tile = jnp.where(group <= g, first[gc] + v - (tile_end[gc] - tiles[gc]), 0)
  zero = jnp.zeros((1,), jnp.int32)
  return group, tile.astype(jnp.int32), jnp.concatenate([starts, zero]), jnp.concatenate(
      [ends, zero]), num_visits


def _precision(dtype) -> jax.lax.Precision | None:
  return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else None


def _gmm_kernel(group_ref, tile_ref, starts_ref, ends_ref, lhs_ref, rhs_ref, out_ref, *,
                k: int, n: int, g: int, bm: int, bk: int, bn: int, transpose_rhs: bool):
  v, jn = pl.program_id(0), pl.program_id(1)
  grp = group_ref[v]
  tile = tile_ref[v]
  start, end = starts_ref[grp], ends_ref[grp]
  rows = tile * bm + jnp.arange(bm)
  cols = jn * bn + jnp.arange(bn)
  row_ok = (rows >= start) & (rows < end)
  col_ok = cols < n
  w = jnp.minimum(grp, g - 1)
  # The tail pseudo-group (grp == G) and surplus points do no loads and no FLOPs.
  # int32 constants, not Python ints: Pallas's Triton lowering of a select between two
  # weak-typed literals gives them the predicate's type (i1), and an i1 loop bound fails
  # Triton's verifier when XLA compiles the kernel (tests/kernels/test_gpu_lowering.py).
  num_k = jnp.where(grp < g, jnp.int32(pl.cdiv(k, bk)), jnp.int32(0))
  prec = _precision(lhs_ref.dtype)

  def body(kb, acc):
    ks = kb * bk + jnp.arange(bk)
    k_ok = ks < k
    a = plgpu.load(lhs_ref.at[rows[:, None], ks[None, :]], mask=row_ok[:, None] & k_ok[None, :],
                   other=0)
    if transpose_rhs:  # rhs [G, N, K]: the d_lhs product, no transposed copy of the weights
      b = plgpu.load(rhs_ref.at[w, cols[:, None], ks[None, :]],
                     mask=col_ok[:, None] & k_ok[None, :], other=0)
      return acc + plgpu.dot(a, b, trans_b=True, precision=prec)
    b = plgpu.load(rhs_ref.at[w, ks[:, None], cols[None, :]],
                   mask=k_ok[:, None] & col_ok[None, :], other=0)
    return acc + plgpu.dot(a, b, precision=prec)

  acc = jax.lax.fori_loop(0, num_k, body, jnp.zeros((bm, bn), jnp.float32))
  plgpu.store(out_ref.at[rows[:, None], cols[None, :]], acc.astype(out_ref.dtype),
              mask=row_ok[:, None] & col_ok[None, :])


def _tgmm_kernel(starts_ref, ends_ref, lhs_ref, dout_ref, out_ref, *, k: int, n: int, bm: int,
                 bk: int, bn: int):
  grp, jk, jn = pl.program_id(0), pl.program_id(1), pl.program_id(2)
  start, end = starts_ref[grp], ends_ref[grp]
  ks = jk * bk + jnp.arange(bk)
  cols = jn * bn + jnp.arange(bn)
  k_ok = ks < k
  col_ok = cols < n
  # Non-negative ints: truncating division (plain `//` lowers to a floor-division sequence).
  first = jax.lax.div(start, jnp.int32(bm))
  num_m = jnp.where(end > start, jax.lax.div(end + (bm - 1), jnp.int32(bm)) - first, 0)
  prec = _precision(lhs_ref.dtype)

  def body(t, acc):
    rows = (first + t) * bm + jnp.arange(bm)
    row_ok = (rows >= start) & (rows < end)
    a = plgpu.load(lhs_ref.at[rows[:, None], ks[None, :]], mask=row_ok[:, None] & k_ok[None, :],
                   other=0)
    b = plgpu.load(dout_ref.at[rows[:, None], cols[None, :]],
                   mask=row_ok[:, None] & col_ok[None, :], other=0)
    return acc + plgpu.dot(a, b, trans_a=True, precision=prec)

  acc = jax.lax.fori_loop(0, num_m, body, jnp.zeros((bk, bn), jnp.float32))
  plgpu.store(out_ref.at[grp, ks[:, None], cols[None, :]], acc.astype(out_ref.dtype),
              mask=k_ok[:, None] & col_ok[None, :])


def _tile(dim: int, block: int) -> int:
  # Triton's dot needs every block dimension >= 16.
  return max(16, min(block, next_pow2(dim)))


def num_warps(rows: int, cols: int, dtype) -> int:
  """Warps per gmm/tgmm program for a [rows, cols] float32 accumulator tile.

  At most 64 accumulator elements a thread for 16-bit inputs (tensor-core dots) and 32 for
  float32 (full-precision dots run on the FMA units and need more registers), within 4..16
  warps. Measured by compiling for sm_90 with Triton 3.9 (`experiments/lower_gpu.py --compile`):
  bf16 gmm 128x128 at 4 warps used 255 registers and spilled, at 8 none; float32 tgmm 64x128
  at 4 warps spilled 15 KB a thread, at 8 none; float32 gmm 128x128 needed 16.
  """
  per_thread = 32 if jnp.dtype(dtype) == jnp.float32 else 64
  return min(16, max(4, next_pow2(rows * cols // (32 * per_thread))))


def _gmm_triton(lhs, rhs, group_sizes, out_dtype, tiling: Tiling, interpret: bool,
                transpose_rhs: bool = False):
  m, k = lhs.shape
  g = rhs.shape[0]
  n = rhs.shape[1] if transpose_rhs else rhs.shape[2]
  bm, bk, bn = _tile(m, tiling[0]), _tile(k, tiling[1]), _tile(n, tiling[2])
  group, tile, starts, ends, num_visits = _visits(group_sizes, m, bm)
  kernel = functools.partial(_gmm_kernel, k=k, n=n, g=g, bm=bm, bk=bk, bn=bn,
                             transpose_rhs=transpose_rhs)
  return pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((m, n), out_dtype),
      grid=(num_visits, pl.cdiv(n, bn)), interpret=interpret,
      compiler_params=plgpu.CompilerParams(num_warps=num_warps(bm, bn, lhs.dtype),
                                           num_stages=3),
      name="moe_gmm",
  )(group, tile, starts, ends, lhs, rhs)


def _tgmm_triton(lhs, dout, group_sizes, out_dtype, tiling: Tiling, interpret: bool):
  m, k = lhs.shape
  n = dout.shape[1]
  g = group_sizes.shape[0]
  bm, bk, bn = _tile(m, tiling[0]), _tile(k, tiling[1]), _tile(n, tiling[2])
  ends = jnp.cumsum(group_sizes, dtype=jnp.int32)
  starts = ends - group_sizes.astype(jnp.int32)
  kernel = functools.partial(_tgmm_kernel, k=k, n=n, bm=bm, bk=bk, bn=bn)
  return pl.pallas_call(
      kernel, out_shape=jax.ShapeDtypeStruct((g, k, n), out_dtype),
      grid=(g, pl.cdiv(k, bk), pl.cdiv(n, bn)), interpret=interpret,
      compiler_params=plgpu.CompilerParams(num_warps=num_warps(bk, bn, lhs.dtype),
                                           num_stages=3),
      name="moe_tgmm",
  )(starts, ends, lhs, dout)


def _megablox_backend():
  # The package re-exports `gmm` (the function) over its `gmm` module: import the module.
  return importlib.import_module("jax.experimental.pallas.ops.tpu.megablox.gmm")


def _megablox_gmm(lhs, rhs, group_sizes, out_dtype, tiling: Tiling, interpret: bool,
                  transpose_rhs: bool = False):
  megablox = _megablox_backend()
  m, k = lhs.shape
  n = rhs.shape[1] if transpose_rhs else rhs.shape[2]
  tm = min(tiling[0], next_pow2(m))
  pad = -m % tm  # megablox needs M divisible by the m tile; padded rows are in no group
  x = jnp.pad(lhs, ((0, pad), (0, 0))) if pad else lhs
  out = megablox.gmm(x, rhs, group_sizes, out_dtype, (tm, min(tiling[1], k), min(tiling[2], n)),
                     transpose_rhs=transpose_rhs, interpret=interpret)[:m]
  # megablox leaves rows past sum(group_sizes) unwritten (uninitialised; NaN when interpreted).
  live = jnp.arange(m) < jnp.sum(group_sizes)
  return jnp.where(live[:, None], out, 0).astype(out_dtype)


def _megablox_tgmm(lhs, dout, group_sizes, out_dtype, tiling: Tiling, interpret: bool):
  megablox = _megablox_backend()
  m, k = lhs.shape
  n = dout.shape[1]
  tm = min(tiling[0], next_pow2(m))
  pad = -m % tm
  if pad:
    lhs, dout = jnp.pad(lhs, ((0, pad), (0, 0))), jnp.pad(dout, ((0, pad), (0, 0)))
  return megablox.tgmm(lhs.swapaxes(0, 1), dout, group_sizes, out_dtype,
                       (tm, min(tiling[1], k), min(tiling[2], n)), interpret=interpret)


def _fwd_product(impl, lhs, rhs, group_sizes, out_dtype, tiling, interpret, transpose_rhs=False):
  fn = _megablox_gmm if impl == "megablox" else _gmm_triton
  return fn(lhs, rhs, group_sizes, out_dtype, tiling, interpret, transpose_rhs=transpose_rhs)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5, 6))
def _gmm_vjp(lhs, rhs, group_sizes, out_dtype, tiling, interpret, impl):
  return _fwd_product(impl, lhs, rhs, group_sizes, out_dtype, tiling, interpret)


def _gmm_vjp_fwd(lhs, rhs, group_sizes, out_dtype, tiling, interpret, impl):
  out = _fwd_product(impl, lhs, rhs, group_sizes, out_dtype, tiling, interpret)
  return out, (lhs, rhs, group_sizes)


def _gmm_vjp_bwd(out_dtype, tiling, interpret, impl, res, d_out):
  lhs, rhs, group_sizes = res
  d_out = d_out.astype(lhs.dtype)
  # d_lhs = d_out rhs^T: a gmm reading the weights transposed (no transposed copy).
  d_lhs = _fwd_product(impl, d_out, rhs, group_sizes, lhs.dtype, tiling, interpret,
                       transpose_rhs=True)
  tg = _megablox_tgmm if impl == "megablox" else _tgmm_triton
  d_rhs = tg(lhs, d_out, group_sizes, rhs.dtype, tiling, interpret)
  return d_lhs, d_rhs, None


_gmm_vjp.defvjp(_gmm_vjp_fwd, _gmm_vjp_bwd)


def gmm(lhs_MxK: jax.Array, rhs_GxKxN: jax.Array, group_sizes_G: jax.Array, *,
        tiling: Tiling = (128, 64, 128), preferred_element_type=None,
        interpret: bool | None = None, platform: str | None = None) -> jax.Array:
  """Grouped matmul [M, K] x [G, K, N] -> [M, N]; see the module docstring.

  tiling: (bm, bk, bn) block sizes, powers of two, clipped to the problem (min 16 on GPU).
  group_sizes: int32 [G], sum <= M. Differentiable in lhs and rhs (custom VJP: gmm with the
  transposed weights for d_lhs, tgmm for d_rhs). `platform` overrides the default backend
  (tests: "tpu" with interpret=True runs megablox on CPU).
  """
  out_dtype = jnp.dtype(preferred_element_type or lhs_MxK.dtype)
  impl, interp = resolve(interpret, platform=platform, tpu_kernel=True)
  if impl == "reference":
    return gmm_reference(lhs_MxK, rhs_GxKxN, group_sizes_G, out_dtype)
  if any(b & (b - 1) for b in tiling):
    raise ValueError(f"tiling={tiling} must be powers of two")
  return _gmm_vjp(lhs_MxK, rhs_GxKxN, group_sizes_G.astype(jnp.int32), out_dtype, tuple(tiling),
                  interp, impl)


def tgmm(lhs_MxK: jax.Array, dout_MxN: jax.Array, group_sizes_G: jax.Array, *,
         tiling: Tiling = (128, 64, 128), preferred_element_type=None,
         interpret: bool | None = None, platform: str | None = None) -> jax.Array:
  """Transposed grouped matmul: [G, K, N] = per-group lhs^T dout (the weight gradient of gmm).
  Not differentiable (it is itself a backward product)."""
  out_dtype = jnp.dtype(preferred_element_type or lhs_MxK.dtype)
  impl, interp = resolve(interpret, platform=platform)
  if impl == "reference":
    return tgmm_reference(lhs_MxK, dout_MxN, group_sizes_G, out_dtype)
  return _tgmm_triton(lhs_MxK, dout_MxN, group_sizes_G.astype(jnp.int32), out_dtype,
                      tuple(tiling), interp)
