"""Shared inputs and tolerances for the kernel tests (interpret mode on CPU: small shapes)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Per dtype: (rtol, atol) for values and for gradients. float32 kernels and references do the
# same float32 arithmetic in a different order; bfloat16 inputs/outputs round to 8 bits of
# mantissa (relative step 2^-8 = 0.4%), with float32 accumulation on both sides.
TOL = {
    jnp.float32: dict(values=(1e-5, 1e-5), grads=(1e-4, 1e-5)),
    jnp.bfloat16: dict(values=(2e-2, 2e-2), grads=(3e-2, 3e-2)),
}


def assert_close(got, want, dtype, kind: str = "values", msg: str = ""):
  rtol, atol = TOL[dtype][kind]
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                             rtol=rtol, atol=atol, err_msg=msg)


def router_logits(tokens: int, experts: int, routing: str, seed: int = 0) -> jax.Array:
  """[T, E] float32 logits. routing: 'random'; 'one_expert' (every token's first choice is
  expert 3); 'idle' (expert 0 is never among the top choices unless top_k = E)."""
  z = jax.random.normal(jax.random.key(seed), (tokens, experts))
  if routing == "one_expert":
    z = z.at[:, 3].add(100.0)
  elif routing == "idle":
    z = z.at[:, 0].add(-100.0)
  return z


def routing_ids(groups: int, length: int, top_k: int, experts: int, routing: str) -> jax.Array:
  """[G, L, K] int32 distinct experts per token, best first, from `router_logits`."""
  z = router_logits(groups * length, experts, routing)
  _, ids = jax.lax.top_k(z, top_k)
  return ids.astype(jnp.int32).reshape(groups, length, top_k)
