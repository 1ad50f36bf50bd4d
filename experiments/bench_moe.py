"""One MoE layer, forward + backward: tokens/s per dispatch and max error against `einsum`.

  python experiments/bench_moe.py                 # default sizes, prints one JSON object
  python experiments/bench_moe.py --sizes=4096:8:2,4096:64:8 --repeats=5
  python experiments/bench_moe.py --sizes=16384:8:2 --d_model=2048 --d_ff=5632 \
      --dtype=bfloat16 --dispatches=sort,pallas            # Mixtral-like, on a GPU

Sizes are tokens:experts:top_k (one sequence of `tokens` tokens, d_model 256, expert width
512 by default, dropless so every dispatch computes the same function).

Throughput: `<dispatch>_expert_tflops` counts the expert FFN's matmul FLOPs only, forward +
backward = 3 x 2 * tokens * top_k * d_model * d_ff * (3 for SwiGLU), over the whole step time.
The ceiling `dense_equiv_*` times one dense matmul with the same FLOPs, [tokens * top_k,
d_model] x [d_model, 3 * d_ff], forward + backward; `<dispatch>_frac_of_dense` is the ratio.
On CPU the `pallas` dispatch runs its pure-JAX references (see scaling/kernels/backend.py).
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


def _timed(fn, *args, repeats: int):
  """Seconds per call after one compiling call; returns (seconds, first result)."""
  first = jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn(*args))
  return (time.perf_counter() - start) / repeats, first


def dense_equivalent(rows: int, d_model: int, width: int, dtype, repeats: int) -> float:
  """Seconds for forward + backward of one [rows, d_model] x [d_model, width] matmul."""
  x = jax.random.normal(jax.random.key(0), (rows, d_model), dtype)
  w = jax.random.normal(jax.random.key(1), (d_model, width), dtype) / d_model**0.5

  @jax.jit
  def step(x, w):
    return jax.grad(lambda x, w: jnp.sum(jnp.square((x @ w).astype(jnp.float32))),
                    argnums=(0, 1))(x, w)

  return _timed(step, x, w, repeats=repeats)[0]


def bench(tokens: int, experts: int, top_k: int, repeats: int, d_model: int = 256,
          d_ff: int = 512, dtype: str = "float32",
          dispatches: tuple[str, ...] = ("einsum", "sort", "pallas")) -> dict:
  cfg = default_config()
  cfg.model.update(d_model=d_model, num_heads=4, num_kv_heads=4, dtype=dtype)
  cfg.model.moe.update(num_experts=experts, top_k=top_k, expert_d_ff=d_ff, dropless=True)
  x = jax.random.normal(jax.random.key(0), (1, tokens, d_model))
  out = {"tokens": tokens, "experts": experts, "top_k": top_k, "d_model": d_model,
         "d_ff": d_ff, "dtype": dtype}
  n_mats = 3 if cfg.model.mlp == "swiglu" else 2
  flops = 3 * 2 * tokens * top_k * d_model * d_ff * n_mats  # forward + backward
  dense_s = dense_equivalent(tokens * top_k, d_model, n_mats * d_ff, jnp.dtype(dtype), repeats)
  out["dense_equiv_step_s"] = dense_s
  out["dense_equiv_tflops"] = flops / dense_s / 1e12
  results = {}
  for dispatch in dispatches:
    cfg.model.moe.dispatch = dispatch
    layer = moe_lib.MoeMlp(cfg.model, dict(cfg.mesh.rules), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(layer)

    step = _make_step(graphdef)
    elapsed, (y, grads) = _timed(step, state, x, repeats=repeats)
    results[dispatch] = (np.asarray(y, np.float32), grads)
    out[f"{dispatch}_tokens_per_s"] = tokens / elapsed
    out[f"{dispatch}_step_s"] = elapsed
    out[f"{dispatch}_expert_tflops"] = flops / elapsed / 1e12
    out[f"{dispatch}_frac_of_dense"] = dense_s / elapsed
  ref = dispatches[0]
  ref_y, ref_g = results[ref]
  for dispatch in dispatches[1:]:
    y, g = results[dispatch]
    out[f"{dispatch}_max_abs_err_y"] = float(np.max(np.abs(y - ref_y)))
    out[f"{dispatch}_max_abs_err_grad"] = float(max(
        np.max(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)))
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref_g), strict=True)))
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--sizes", default="1024:8:2,1024:32:4,2048:8:2")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--d_model", type=int, default=256)
  parser.add_argument("--d_ff", type=int, default=512)
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--dispatches", default="einsum,sort,pallas",
                      help="comma-separated; errors are against the first (einsum's [E, C] "
                      "tensors do not fit at large sizes: start with sort there)")
  args = parser.parse_args()
  rows = []
  for size in args.sizes.split(","):
    tokens, experts, top_k = (int(v) for v in size.split(":"))
    rows.append(bench(tokens, experts, top_k, args.repeats, args.d_model, args.d_ff, args.dtype,
                      tuple(args.dispatches.split(","))))
  print(json.dumps({"device": jax.devices()[0].device_kind, "results": rows}, indent=2))


if __name__ == "__main__":
  main()
