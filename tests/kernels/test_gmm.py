"""Grouped matmul kernels (interpret mode) against `jax.lax.ragged_dot` and a masked einsum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.kernels import gmm
from tests.kernels.helpers import assert_close

M, K, N = 45, 20, 24  # none a multiple of the 16-wide blocks

CASES = [
    # group sizes (sum <= M: rows past the sum are capacity-dropped and must come out zero),
    # tiling, dtype
    ([10, 0, 20, 3, 7], (16, 16, 16), jnp.float32),  # an empty group, a zero tail of 5 rows
    ([0, 45, 0, 0, 0], (16, 16, 16), jnp.float32),  # every row to one group
    ([6, 6, 5, 6, 6, 5, 6, 5], (32, 16, 32), jnp.float32),  # 8 groups, tiles straddle groups
    ([10, 0, 20, 3, 7], (16, 16, 16), jnp.bfloat16),
    ([0, 0, 0, 0, 0], (16, 16, 16), jnp.bfloat16),  # everything dropped
]


def _inputs(groups, dtype):
  lhs = jax.random.normal(jax.random.key(0), (M, K)).astype(dtype)
  rhs = (jax.random.normal(jax.random.key(1), (groups, K, N)) / np.sqrt(K)).astype(dtype)
  return lhs, rhs


def _loss(fn):
  def f(lhs, rhs):
    out = fn(lhs, rhs)
    return jnp.sum(jnp.sin(out.astype(jnp.float32))), out
  return jax.value_and_grad(f, argnums=(0, 1), has_aux=True)


@pytest.mark.parametrize("sizes,tiling,dtype", CASES)
def test_gmm_values_and_grads_match_ragged_dot(sizes, tiling, dtype):
  sizes = jnp.array(sizes, jnp.int32)
  lhs, rhs = _inputs(sizes.shape[0], dtype)
  (_, want), g_want = _loss(lambda a, b: gmm.gmm_reference(a, b, sizes))(lhs, rhs)
  (_, got), g_got = jax.jit(_loss(
      lambda a, b: gmm.gmm(a, b, sizes, tiling=tiling, interpret=True)))(lhs, rhs)
  assert got.dtype == dtype and g_got[1].dtype == dtype
  assert_close(got, want, dtype)
  total = int(jnp.sum(sizes))
  assert not np.any(np.asarray(got[total:], np.float32))
  assert_close(g_got[0], g_want[0], dtype, "grads", "d_lhs")
  assert_close(g_got[1], g_want[1], dtype, "grads", "d_rhs")
  if dtype == jnp.float32:
    # The references agree with a dense per-row computation.
    group = np.repeat(np.arange(sizes.shape[0]), sizes)
    dense = np.einsum("mk,mkn->mn", lhs[:total], np.asarray(rhs)[group])
    np.testing.assert_allclose(got[:total], dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_tgmm_matches_reference(dtype):
  sizes = jnp.array([10, 0, 20, 3, 7], jnp.int32)
  lhs, _ = _inputs(5, dtype)
  dout = jax.random.normal(jax.random.key(3), (M, N)).astype(dtype)
  got = gmm.tgmm(lhs, dout, sizes, tiling=(16, 16, 16), interpret=True)
  want = gmm.tgmm_reference(lhs, dout, sizes)
  assert got.shape == (5, K, N) and got.dtype == dtype
  assert not np.any(np.asarray(got[1], np.float32))  # the empty group
  assert_close(got, want, dtype)


def test_megablox_tpu_path_interpreted():
  # The TPU implementation (JAX's megablox) through this module's custom VJP, interpreted.
  sizes = jnp.array([10, 0, 20, 3, 7], jnp.int32)
  lhs, rhs = _inputs(5, jnp.float32)
  (_, want), g_want = _loss(lambda a, b: gmm.gmm_reference(a, b, sizes))(lhs, rhs)
  (_, got), g_got = jax.jit(_loss(lambda a, b: gmm.gmm(
      a, b, sizes, tiling=(16, 16, 16), interpret=True, platform="tpu")))(lhs, rhs)
  assert_close(got, want, jnp.float32)
  for a, b in zip(g_got, g_want, strict=True):
    assert_close(a, b, jnp.float32, "grads")


def test_tiling_must_be_powers_of_two():
  lhs, rhs = _inputs(2, jnp.float32)
  with pytest.raises(ValueError, match="powers of two"):
    gmm.gmm(lhs, rhs, jnp.array([20, 25], jnp.int32), tiling=(24, 16, 16), interpret=True)
