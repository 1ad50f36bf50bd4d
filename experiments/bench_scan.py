"""Plain JAX, no model code: the gradient of a stack of MLP layers, looped vs straight-line.

  python experiments/bench_scan.py --layers=4,16

Stacked float32 weights [layers, d, f] and [layers, f, d], bf16 compute, one `jax.lax.scan`
over the layers with `unroll=1` (a while loop) or `unroll=layers` (straight-line code), timed
in alternating rounds in one process. It isolates the looped stack's cost on the CPU from this
project's model (`scaling.models.dense.straight_line` chooses between the two; ARCHITECTURE.md,
"Scanned layers on the CPU"). Prints one JSON object: per depth, median ms per gradient and
loop / straight-line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp


def _grad_fns(layers: int, batch: int, seq: int, d: int, f: int):
  k = jax.random.split(jax.random.key(0), 3)
  w_LxDxF = jax.random.normal(k[0], (layers, d, f), jnp.float32) * 0.02
  w_LxFxD = jax.random.normal(k[1], (layers, f, d), jnp.float32) * 0.02
  x_BxTxD = jax.random.normal(k[2], (batch, seq, d), jnp.float32)

  def layer(x, w):
    up, down = (v.astype(jnp.bfloat16) for v in w)
    h = jax.nn.gelu(jnp.einsum("btd,df->btf", x.astype(jnp.bfloat16), up))
    return x + jnp.einsum("btf,fd->btd", h, down).astype(jnp.float32), None

  def loss(params, unroll):
    x, _ = jax.lax.scan(layer, x_BxTxD, params, unroll=unroll)
    return jnp.mean(x**2)

  params = (w_LxDxF, w_LxFxD)
  fns = {name: jax.jit(jax.grad(lambda p, u=u: loss(p, u)))
         for name, u in (("loop", 1), ("straight", layers))}
  for fn in fns.values():
    jax.block_until_ready(fn(params))
  return fns, params


def main() -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--layers", default="4,16", help="comma-separated depths")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--shape", default="32,128,256,1024", help="batch,seq,d_model,d_ff")
  args = parser.parse_args()
  batch, seq, d, f = (int(v) for v in args.shape.split(","))
  out = {"device": jax.devices()[0].device_kind, "shape": [batch, seq, d, f], "results": {}}
  for layers in (int(v) for v in args.layers.split(",")):
    fns, params = _grad_fns(layers, batch, seq, d, f)
    times = {name: [] for name in fns}
    for r in range(args.rounds):
      for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
        start = time.perf_counter()
        jax.block_until_ready(fns[name](params))
        times[name].append(time.perf_counter() - start)
    ms = {name: 1e3 * statistics.median(v) for name, v in times.items()}
    out["results"][layers] = {**{f"{k}_ms": round(v, 1) for k, v in ms.items()},
                              "loop_over_straight": round(ms["loop"] / ms["straight"], 3)}
  print(json.dumps(out, indent=1))
  return out


if __name__ == "__main__":
  main()
