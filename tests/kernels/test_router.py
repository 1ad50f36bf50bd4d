"""Fused router kernel (interpret mode) against the pure-JAX reference and `moe.route`."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from scaling.kernels import router
from scaling.models import moe as moe_lib
from tests.kernels.helpers import assert_close, router_logits

CASES = [
    # tokens, experts, top_k, gating, renormalize, routing. 37 tokens: not a multiple of the
    # 16-token block; 6 experts: not a power of two (padded to 8 inside the kernel).
    (37, 8, 1, "softmax_topk", True, "idle"),
    (37, 8, 2, "softmax_topk", True, "one_expert"),
    (37, 6, 2, "softmax_topk", False, "random"),
    (37, 8, 2, "topk_softmax", True, "random"),
    (20, 8, 8, "topk_softmax", True, "one_expert"),
]


@pytest.mark.parametrize("tokens,experts,top_k,gating,renormalize,routing", CASES)
def test_router_matches_reference(tokens, experts, top_k, gating, renormalize, routing):
  logits = router_logits(tokens, experts, routing)
  kw = dict(gating=gating, renormalize=renormalize)

  def loss(fn):
    def f(z):
      r = fn(z)
      return jnp.sum(jnp.sin(3.0 * r.weights)) + jnp.sum(jnp.cos(5.0 * r.probs)), r
    return f

  # One compilation per side: the routing and the logits' gradient together.
  (_, want), g_want = jax.value_and_grad(
      loss(lambda z: router.route_reference(z, top_k, **kw)), has_aux=True)(logits)
  (_, got), g_got = jax.jit(jax.value_and_grad(loss(
      lambda z: router.route(z, top_k, block_tokens=16, interpret=True, **kw)),
      has_aux=True))(logits)
  assert_close(g_got, g_want, jnp.float32, "grads")
  np.testing.assert_array_equal(got.ids, want.ids)
  np.testing.assert_array_equal(got.counts, want.counts)
  np.testing.assert_array_equal(got.offsets, want.offsets)
  assert int(jnp.sum(got.counts)) == tokens * top_k
  assert_close(got.weights, want.weights, jnp.float32)
  assert_close(got.probs, want.probs, jnp.float32)
  if routing == "one_expert":
    assert np.all(np.asarray(got.ids[:, 0]) == 3)
  if routing == "idle" and top_k < experts:
    assert int(got.counts[0]) == 0

  # The same routing as the MoE layer's `route` (what the `sort` dispatch uses).
  moe = ml_collections.ConfigDict(dict(top_k=top_k, **kw))
  ids, weights, probs = moe_lib.route(logits[None], moe)
  np.testing.assert_array_equal(got.ids, ids[0])
  assert_close(got.weights, weights[0], jnp.float32)


def test_router_bfloat16_logits_are_routed_in_float32():
  # The MoE router runs in float32 (Fedus et al. 2022, Sec. 2.4): bfloat16 logits are upcast.
  logits = router_logits(24, 8, "random").astype(jnp.bfloat16)
  got = router.route(logits, 2, block_tokens=8, interpret=True)
  want = router.route_reference(logits.astype(jnp.float32), 2)
  np.testing.assert_array_equal(got.ids, want.ids)
  assert got.weights.dtype == jnp.float32
  assert_close(got.weights, want.weights, jnp.float32)


def test_cpu_default_is_the_reference():
  logits = router_logits(10, 4, "random")
  jaxpr = str(jax.make_jaxpr(lambda z: router.route(z, 2))(logits))
  assert "pallas_call" not in jaxpr
  assert "pallas_call" in str(jax.make_jaxpr(lambda z: router.route(z, 2, interpret=True))(logits))
