"""Issue 20's accelerator figures in one run (~10 minutes on one H100/H200), as one JSON object.

  python experiments/gpu_check.py                 # on the GPU
  python experiments/gpu_check.py --tiny          # toy sizes: checks it parses and runs (CPU)

Dense: tokens/s and MFU (against `--peak_tflops`, default 989 bf16 dense: H100 and H200 SXM
have the same compute) of the jitted train step (experiments/bench_train.py `single`, the step
`scaling train` runs) for `gpt2_124m` and the ladder rung `ladder_d28` (1.08B non-embedding) at
seq 2048, remat `none` vs `dots_saveable`, XLA/cuDNN attention (`model.attention_impl=auto`).

MoE: one layer forward + backward at T=16384, d=2048, bf16, dropless (experiments/bench_moe.py
`bench`): E8 top-2 d_ff 5632 and E64 top-8 d_ff 1408, dispatch `pallas` vs `sort` (whose grouped
matmul is `jax.lax.ragged_dot`), `pallas_over_ragged_dot` their speed ratio; each layer's
fraction of a dense matmul with the same FLOPs (`*_frac_of_dense`); and `routing_share`, the
time of routing alone (router matmul + top-k kernel + plan + permute + unpermute, forward +
backward, no expert matmuls) over the `pallas` layer's. A failing case is reported under
`errors` and the others still run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_moe  # noqa: E402
import bench_train  # noqa: E402

from scaling.kernels import permute as permute_lib  # noqa: E402
from scaling.kernels import router as router_lib  # noqa: E402
from scaling.kernels.backend import KernelBackend  # noqa: E402

FULL = {
    "dense": [("gpt2_124m", 2048, 16), ("ladder_d28", 2048, 8)],  # preset, seq, batch
    "moe": [(16384, 8, 2, 5632), (16384, 64, 8, 1408)],  # tokens, experts, top_k, d_ff
    "d_model": 2048, "steps": 10, "repeats": 5,
}
TINY = {
    "dense": [("tiny", 64, 8)],  # batch 8: divisible by the 8 CPU devices of the tests
    "moe": [(128, 4, 2, 64)],
    "d_model": 64, "steps": 1, "repeats": 1,
}


def dense(preset: str, seq: int, batch: int, remat: str, steps: int, peak_tflops: float) -> dict:
  """One `bench_train.single` run; MFU recomputed against `peak_tflops`."""
  argv = [f"--config=configs/dense.py:{preset}", f"--steps={steps}",
          f"--config.train.seq_len={seq}", f"--config.model.max_len={max(seq, 1)}",
          f"--config.train.global_batch={batch}", f"--config.model.remat={remat}"]
  r = bench_train.main(argv)
  return {"preset": preset, "seq_len": seq, "global_batch": batch, "remat": remat,
          "tokens_per_s": r["tokens_per_s"], "step_time_s": r["step_time_s"],
          "compile_plus_first_step_s": r["compile_plus_first_step_s"],
          "mfu": r["model_flops_per_s"] / (r["devices"] * peak_tflops * 1e12),
          "peak_bytes_in_use_device0": r["peak_bytes_in_use_device0"], "loss": r["loss"]}


def routing_seconds(tokens: int, experts: int, top_k: int, d_model: int, dtype, repeats: int
                    ) -> float:
  """Forward + backward of routing alone, with the `pallas` dispatch's kernels: router matmul,
  top-k, plan, permute and weighted unpermute of the permuted rows (the expert FFN skipped)."""
  kw = KernelBackend.resolve().kwargs()
  x = jax.random.normal(jax.random.key(0), (tokens, d_model), dtype)
  w = jax.random.normal(jax.random.key(1), (d_model, experts), jnp.float32) / d_model**0.5

  def loss(x, w):
    r = router_lib.route(x.astype(jnp.float32) @ w, top_k, **kw)
    plan = permute_lib.make_plan(r.ids[None], experts)
    rows = permute_lib.permute(x, plan, **kw)
    y = permute_lib.unpermute(rows, plan, r.weights.astype(x.dtype), **kw)
    return jnp.sum(jnp.square(y.astype(jnp.float32)))

  step = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return bench_moe._timed(step, x, w, repeats=repeats)[0]


def moe(tokens: int, experts: int, top_k: int, d_ff: int, d_model: int, repeats: int) -> dict:
  r = bench_moe.bench(tokens, experts, top_k, repeats, d_model=d_model, d_ff=d_ff,
                      dtype="bfloat16", dispatches=("sort", "pallas"))
  r["pallas_over_ragged_dot"] = r["sort_step_s"] / r["pallas_step_s"]
  route_s = routing_seconds(tokens, experts, top_k, d_model, jnp.bfloat16, repeats)
  r["routing_step_s"] = route_s
  r["routing_share"] = route_s / r["pallas_step_s"]
  return r


def _guarded(errors: list, name: str, fn, *args):
  try:
    return fn(*args)
  except Exception as e:  # one failing case (OOM, a kernel) must not lose the others' figures
    errors.append({"case": name, "error": f"{type(e).__name__}: {e}"[:2000],
                   "trace": traceback.format_exc()[-2000:]})
    return None


def run(tiny: bool, peak_tflops: float, only: str = "") -> dict:
  sizes = TINY if tiny else FULL
  out: dict = {"device_kind": jax.devices()[0].device_kind, "devices": jax.device_count(),
               "tiny": tiny, "peak_tflops": peak_tflops, "dense": [], "moe": [], "errors": []}
  start = time.perf_counter()
  if only in ("", "dense"):
    for preset, seq, batch in sizes["dense"]:
      for remat in ("none", "dots_saveable"):
        r = _guarded(out["errors"], f"dense {preset} {remat}", dense, preset, seq, batch, remat,
                     sizes["steps"], peak_tflops)
        if r:
          out["dense"].append(r)
  if only in ("", "moe"):
    for tokens, experts, top_k, d_ff in sizes["moe"]:
      r = _guarded(out["errors"], f"moe E{experts} top{top_k}", moe, tokens, experts, top_k,
                   d_ff, sizes["d_model"], sizes["repeats"])
      if r:
        out["moe"].append(r)
  out["wall_s"] = time.perf_counter() - start
  return out


def main(argv: list[str]) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tiny", action="store_true", help="toy sizes (CPU smoke run)")
  parser.add_argument("--peak_tflops", type=float, default=989.0)
  parser.add_argument("--only", choices=["", "dense", "moe"], default="")
  args = parser.parse_args(argv)
  return run(args.tiny, args.peak_tflops, args.only)


if __name__ == "__main__":
  print(json.dumps(main(sys.argv[1:]), indent=2))
