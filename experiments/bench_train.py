"""Train-step throughput: tokens/s, step time, MFU, compile time, peak memory, as one JSON object.

  python experiments/bench_train.py --config=configs/dense.py:tiny --steps=20
  python experiments/bench_train.py --config=configs/dense.py:ladder_d12 \
      --config.train.global_batch=32 --config.train.seq_len=1024 --hardware=h100

Batches are random tokens (the input pipeline is measured by bench_data.py); the step is the
same jitted, donated, sharded step that `scaling train` runs (`scaling.train.loop.build_trainer`).
MFU = achieved model FLOP/s (accounting's `train.flops_method`, per token) / (devices x peak).
"""

from __future__ import annotations

import json
import sys
import time

import jax
import numpy as np
from absl import flags

from scaling import accounting, hardware
from scaling.commands.common import parse
from scaling.config import validate
from scaling.parallel.mesh import make_mesh
from scaling.train.loop import build_trainer


def _define(fv):
  flags.DEFINE_integer("steps", 20, "Timed steps (after one compile step).", flag_values=fv)
  flags.DEFINE_string("hardware", "", "Peak table entry (default: detected).", flag_values=fv)


def main(argv: list[str]) -> dict:
  fv = parse(argv, _define, prog="python experiments/bench_train.py", config=True,
             usage="python experiments/bench_train.py --config=FILE[:PRESET] [--steps=20]").fv
  cfg = validate(fv["config"].value)
  t = cfg.train
  mesh = make_mesh(cfg.mesh)
  rng = np.random.default_rng(0)
  shape = (t.global_batch, t.seq_len)

  def batch():
    tokens = rng.integers(0, cfg.model.vocab_size, size=(shape[0], shape[1] + 1))
    host = {"inputs": tokens[:, :-1].astype(np.int32), "targets": tokens[:, 1:].astype(np.int32),
            "mask": np.ones(shape, np.float32)}
    return {k: jax.device_put(v, trainer.batch_sharding) for k, v in host.items()}

  trainer = build_trainer(cfg, mesh)
  state = trainer.state
  with jax.set_mesh(mesh):
    start = time.perf_counter()
    state, metrics = trainer.train_step(state, batch())
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    batches = [batch() for _ in range(fv["steps"].value)]
    start = time.perf_counter()
    for b in batches:
      state, metrics = trainer.train_step(state, b)
    jax.block_until_ready(metrics)
    elapsed = time.perf_counter() - start

  steps = fv["steps"].value
  tokens_per_s = steps * shape[0] * shape[1] / elapsed
  per_token = accounting.flops_per_token(cfg.model, t.seq_len)[t.flops_method]
  hw = fv["hardware"].value or hardware.detect()
  devices = mesh.devices.size
  peak_mem = None
  stats = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") else None
  if stats:
    peak_mem = stats.get("peak_bytes_in_use")
  return {
      "model": cfg.model.name, "params_non_embedding":
          accounting.param_counts(cfg.model)["params_non_embedding"],
      "global_batch": t.global_batch, "seq_len": t.seq_len, "mesh": dict(mesh.shape),
      "device_kind": jax.devices()[0].device_kind, "devices": devices, "hardware": hw,
      "compile_plus_first_step_s": compile_s, "step_time_s": elapsed / steps,
      "tokens_per_s": tokens_per_s, "flops_method": t.flops_method,
      "model_flops_per_s": tokens_per_s * per_token,
      "mfu": tokens_per_s * per_token / (devices * hardware.peak_flops(hw)),
      "peak_bytes_in_use_device0": peak_mem, "loss": float(metrics["loss"]),
  }


if __name__ == "__main__":
  print(json.dumps(main(sys.argv[1:]), indent=2))
