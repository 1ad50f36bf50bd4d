"""One MoE layer, forward + backward: tokens/s per dispatch and max error against `einsum`.

  python experiments/bench_moe.py                 # default sizes, prints one JSON object
  python experiments/bench_moe.py --sizes=4096:8:2,4096:64:8 --repeats=5

Sizes are tokens:experts:top_k (one sequence of `tokens` tokens, d_model 256, expert width
512, dropless so every dispatch computes the same function).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scaling.config import default_config
from scaling.models import moe as moe_lib


def _make_step(graphdef):
  """Jitted forward + backward of one layer: (state, x) -> (y, grads)."""

  def loss(state, x):
    y, aux = nnx.merge(graphdef, state)(x, train=True)
    return jnp.sum(jnp.square(y)) + aux["load_balance"], y

  @jax.jit
  def step(state, x):
    (_, y), grads = jax.value_and_grad(loss, has_aux=True)(state, x)
    return y, grads

  return step


def bench(tokens: int, experts: int, top_k: int, repeats: int, d_model: int = 256,
          d_ff: int = 512) -> dict:
  cfg = default_config()
  cfg.model.update(d_model=d_model, num_heads=4, num_kv_heads=4, dtype="float32")
  cfg.model.moe.update(num_experts=experts, top_k=top_k, expert_d_ff=d_ff, dropless=True)
  x = jax.random.normal(jax.random.key(0), (1, tokens, d_model))
  out = {"tokens": tokens, "experts": experts, "top_k": top_k}
  results = {}
  for dispatch in ("einsum", "sort"):
    cfg.model.moe.dispatch = dispatch
    layer = moe_lib.MoeMlp(cfg.model, dict(cfg.mesh.rules), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(layer)

    step = _make_step(graphdef)
    y, grads = jax.block_until_ready(step(state, x))  # compile
    start = time.perf_counter()
    for _ in range(repeats):
      jax.block_until_ready(step(state, x))
    elapsed = (time.perf_counter() - start) / repeats
    results[dispatch] = (np.asarray(y), grads)
    out[f"{dispatch}_tokens_per_s"] = tokens / elapsed
    out[f"{dispatch}_step_s"] = elapsed
  ref_y, ref_g = results["einsum"]
  y, g = results["sort"]
  out["sort_max_abs_err_y"] = float(np.max(np.abs(y - ref_y)))
  out["sort_max_abs_err_grad"] = float(max(
      np.max(np.abs(np.asarray(a) - np.asarray(b)))
      for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref_g), strict=True)))
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--sizes", default="1024:8:2,1024:32:4,2048:8:2")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  rows = []
  for size in args.sizes.split(","):
    tokens, experts, top_k = (int(v) for v in size.split(":"))
    rows.append(bench(tokens, experts, top_k, args.repeats))
  print(json.dumps({"device": jax.devices()[0].device_kind, "results": rows}, indent=2))


if __name__ == "__main__":
  main()
