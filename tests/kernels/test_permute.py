"""Permute / unpermute kernels (interpret mode) against the pure-JAX references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.kernels import permute
from scaling.models import moe as moe_lib
from tests.kernels.helpers import assert_close, routing_ids

D = 20  # not a multiple of the 16-column block
BLOCK = (8, 16)

CASES = [
    # groups, length, top_k, experts, capacity (None: dropless), routing, dtype
    (2, 13, 1, 8, None, "idle", jnp.float32),  # expert 0 gets nothing
    (2, 13, 2, 8, 3, "one_expert", jnp.float32),  # everyone to expert 3, capacity drops
    (1, 11, 8, 8, None, "random", jnp.float32),  # top-8 of 8
    (2, 13, 2, 5, 4, "random", jnp.bfloat16),  # drops, 5 experts
    (1, 11, 8, 8, 6, "one_expert", jnp.bfloat16),
]


@pytest.mark.parametrize("groups,length,top_k,experts,capacity,routing,dtype", CASES)
def test_permute_unpermute_match_reference(groups, length, top_k, experts, capacity, routing,
                                           dtype):
  ids = routing_ids(groups, length, top_k, experts, routing)
  plan = permute.make_plan(ids, experts, capacity=capacity)
  t, m = groups * length, groups * length * top_k

  # The plan: a permutation, kept rows grouped by expert in expert order, drops at the tail,
  # and the same keep mask as the MoE layer's capacity rule.
  np.testing.assert_array_equal(np.sort(plan.src), np.arange(m))
  np.testing.assert_array_equal(plan.src[plan.dest], np.arange(m))
  pos = moe_lib.slot_positions(ids, experts)
  want_keep = (pos < (capacity or length)).reshape(t, top_k)
  np.testing.assert_array_equal(plan.keep, want_keep)
  kept = int(plan.num_kept[0])
  assert kept == int(np.sum(want_keep)) == int(np.sum(plan.group_sizes))
  sorted_ids = np.asarray(ids).reshape(-1)[np.asarray(plan.src)[:kept]]
  np.testing.assert_array_equal(sorted_ids, np.repeat(np.arange(experts), plan.group_sizes))
  if capacity is not None and routing == "one_expert":
    assert kept < m  # there are drops
  if routing == "idle":
    assert int(plan.group_sizes[0]) == 0

  x = jax.random.normal(jax.random.key(1), (t, D)).astype(dtype)
  gate = jax.random.uniform(jax.random.key(2), (t, top_k)) * plan.keep

  def run(perm, unperm):
    def loss(x, gate):
      rows = perm(x, plan)
      y = unperm(jnp.cos(rows), plan, gate)  # cos: dropped (zero) rows become 1, gated by 0
      return jnp.sum(jnp.sin(y.astype(jnp.float32))), (rows, y)
    return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)

  (_, (rows0, y0)), g0 = run(permute.permute_reference, permute.unpermute_reference)(x, gate)
  (_, (rows1, y1)), g1 = jax.jit(run(
      lambda x, p: permute.permute(x, p, block=BLOCK, interpret=True),
      lambda r, p, g: permute.unpermute(r, p, g, block=BLOCK, interpret=True)))(x, gate)
  np.testing.assert_array_equal(rows1, rows0)  # a gather is exact in any dtype
  assert not np.any(np.asarray(rows1[kept:], np.float32))
  assert y1.dtype == dtype
  assert_close(y1, y0, dtype)
  assert_close(g1[0], g0[0], dtype, "grads", "d_x")
  assert_close(g1[1], g0[1], jnp.float32 if dtype == jnp.float32 else dtype, "grads", "d_gate")


def test_permute_backward_is_a_gather_not_a_scatter():
  ids = routing_ids(1, 8, 2, 4, "random")
  plan = permute.make_plan(ids, 4)
  x = jnp.ones((8, 16))
  fn = lambda x, g: permute.unpermute(permute.permute(x, plan, interpret=True), plan, g,
                                      interpret=True)
  jaxpr = str(jax.make_jaxpr(jax.grad(lambda x, g: jnp.sum(fn(x, g)), argnums=(0, 1)))(
      x, jnp.ones((8, 2))))
  assert "scatter" not in jaxpr
  assert jaxpr.count("pallas_call") == 5  # permute, unpermute; backward: 2 gathers, gate grad
