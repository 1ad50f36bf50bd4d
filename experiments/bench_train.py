"""Train-step throughput: tokens/s, step time, MFU, compile time, peak memory, as one JSON object.

  python experiments/bench_train.py --config=configs/dense.py:tiny --steps=20
  python experiments/bench_train.py --config=configs/dense.py:ladder_d12 \
      --config.train.global_batch=32 --config.train.seq_len=1024 --hardware=h100

Side by side, in one process (`--compare=unrolled`: the same model with `model.scan_layers`
flipped; `--compare=xla_options`: the same step compiled with XLA's defaults instead of
`scaling.xla_options.STEPS`; `--nanodo=DIR`: google-deepmind/nanodo's model from a checkout at
DIR, e.g. `git --git-dir=<nanodo.git> archive HEAD | tar -x -C /tmp/nanodo`, skipped when DIR is
absent, timed as nanodo ships, with XLA's defaults, and also as `nanodo+xla_options`, compiled
with this project's options, so that a gain from the options is not credited to the model):

  python experiments/bench_train.py --config=configs/dense.py:tiny --shape=nanodo \
      --compare=unrolled --nanodo=/tmp/nanodo --rounds=5 --steps=10

Contenders run in alternating rounds (the order flips every round), so a neighbour's load on a
shared machine hits them alike; the JSON gives each one's median tokens/s and the median of the
per-round ratios to this project's configured step (`vs_ours`). Compared ratios from two
separate processes are not reported.

Batches are random tokens (the input pipeline is measured by bench_data.py); the step is the
same jitted, donated, sharded step that `scaling train` runs (`scaling.train.loop.build_trainer`).
MFU = achieved model FLOP/s (accounting's `train.flops_method`, per token) / (devices x peak).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import flags

from scaling import accounting, hardware, xla_options
from scaling.commands.common import parse
from scaling.config import validate
from scaling.errors import ScalingError
from scaling.parallel.mesh import make_mesh
from scaling.train.loop import build_trainer

# nanodo's benchmark shape (issue 20): its model with vocab 256, bf16 compute, GELU, learned
# positions, tied embeddings; seq 128, batch 32.
NANODO_SHAPE = dict(vocab_size=256, d_model=256, num_heads=4, num_kv_heads=4, num_layers=4,
                    d_ff=1024, max_len=128, mlp="gelu", position="learned",
                    tied_embeddings=True, dtype="bfloat16")


def _define(fv):
  flags.DEFINE_integer("steps", 20, "Timed steps (per round with --compare/--nanodo).",
                       flag_values=fv)
  flags.DEFINE_string("hardware", "", "Peak table entry (default: detected).", flag_values=fv)
  flags.DEFINE_enum("compare", "", ["", "unrolled", "xla_options"],
                    "Also time the model with scan_layers flipped (unrolled), or compiled with "
                    "XLA's default options (xla_options), in this process.",
                    flag_values=fv)
  flags.DEFINE_string("nanodo", "", "A nanodo checkout to time side by side (skipped if absent).",
                      flag_values=fv)
  flags.DEFINE_integer("rounds", 5, "Alternating rounds when comparing.", flag_values=fv)
  flags.DEFINE_integer("layers", None, "With --shape: this many layers instead of the shape's.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_enum("shape", "", ["", "nanodo"],
                    "Override the model shape: 'nanodo' is issue 20's (NANODO_SHAPE), batch 32.",
                    flag_values=fv)


class Contender:
  """One step to time: `run(n)` runs n steps on prepared batches and returns seconds."""

  def __init__(self, name: str, step: Callable, state, batches: list):
    self.name, self._step, self.state, self._batches = name, step, state, batches
    start = time.perf_counter()
    self.state, out = self._step(self.state, batches[0])
    jax.block_until_ready(out)
    self.compile_s = time.perf_counter() - start
    self.last = out

  def run(self, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
      self.state, self.last = self._step(self.state, self._batches[i % len(self._batches)])
    jax.block_until_ready(self.last)
    return time.perf_counter() - start


def _host_batches(cfg: ml_collections.ConfigDict, n: int) -> list[np.ndarray]:
  rng = np.random.default_rng(0)
  t = cfg.train
  return [rng.integers(0, cfg.model.vocab_size, size=(t.global_batch, t.seq_len + 1))
          .astype(np.int32) for _ in range(n)]


def _ours(name: str, cfg: ml_collections.ConfigDict, mesh, host: list) -> Contender:
  trainer = build_trainer(cfg, mesh)

  def put(tokens):
    b = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
         "mask": np.ones(tokens[:, 1:].shape, np.float32)}
    return {k: jax.device_put(v, trainer.batch_sharding) for k, v in b.items()}

  with jax.set_mesh(mesh):
    return Contender(name, trainer.train_step, trainer.state, [put(h) for h in host])


@contextlib.contextmanager
def _xla_defaults():
  """Steps built inside compile with XLA's default options (`scaling.xla_options.STEPS` off)."""
  saved = dict(xla_options.STEPS)
  xla_options.STEPS.clear()
  try:
    yield
  finally:
    xla_options.STEPS.update(saved)


def _nanodo(path: str, cfg: ml_collections.ConfigDict, host: list, name: str = "nanodo",
            options: dict | None = None) -> Contender:
  """nanodo's TransformerDo (imported from `path`, not vendored) under the same AdamW, clipping
  and loss as ours: a plain jitted, donated value_and_grad + optax step, compiled with
  `options` (None: XLA's defaults)."""
  sys.path.insert(0, path)
  try:
    from nanodo import model as nd  # noqa: PLC0415
  finally:
    sys.path.remove(path)
  m, t = cfg.model, cfg.train
  docfg = nd.DoConfig(D=m.d_model, H=m.num_heads, L=t.seq_len, N=m.num_layers, V=m.vocab_size,
                      F=m.d_ff, dtype=jnp.dtype(m.dtype), fsdp_enabled=False)
  module = nd.TransformerDo(docfg)
  params = jax.jit(module.init)(jax.random.key(0), jnp.asarray(host[0][:1, :-1]))["params"]
  tx = optax.adamw(t.lr, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay)
  if t.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(t.grad_clip), tx)

  def loss_fn(p, tokens):
    logits = module.apply({"params": p}, tokens[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  def step(state, tokens):
    p, opt = state
    loss, grads = jax.value_and_grad(loss_fn)(p, tokens)
    updates, opt = tx.update(grads, opt, p)
    return (optax.apply_updates(p, updates), opt), loss

  return Contender(name, jax.jit(step, donate_argnums=0, compiler_options=options),
                   (params, tx.init(params)), [jnp.asarray(h) for h in host])


def _rounds(contenders: list[Contender], rounds: int, steps: int, tokens: int) -> dict:
  """Median tokens/s per contender, and the median per-round ratio to the first."""
  rates: dict[str, list[float]] = {c.name: [] for c in contenders}
  for c in contenders:  # one untimed round: the first runs after compiling are slow on the CPU
    c.run(steps)
  for r in range(rounds):
    for c in contenders if r % 2 == 0 else contenders[::-1]:
      rates[c.name].append(steps * tokens / c.run(steps))
  base = contenders[0].name
  return {c.name: {"tokens_per_s": statistics.median(rates[c.name]),
                   "tokens_per_s_rounds": rates[c.name],
                   "compile_plus_first_step_s": c.compile_s,
                   "vs_ours": statistics.median(a / b for a, b in zip(rates[c.name], rates[base],
                                                                      strict=True))}
          for c in contenders}


def compare(cfg: ml_collections.ConfigDict, fv) -> dict:
  """The side-by-side JSON: this project's step as configured, optionally unrolled/scanned and
  nanodo, timed in alternating rounds."""
  mesh = make_mesh(cfg.mesh)
  t = cfg.train
  host = _host_batches(cfg, min(fv["steps"].value, 8))
  scan = bool(cfg.model.scan_layers)
  contenders = [_ours("scan" if scan else "unrolled", cfg, mesh, host)]
  if fv["compare"].value == "unrolled":
    other = ml_collections.ConfigDict(cfg.to_dict())
    other.model.scan_layers = not scan
    contenders.append(_ours("unrolled" if scan else "scan", other, mesh, host))
  elif fv["compare"].value == "xla_options":
    with _xla_defaults():
      contenders.append(_ours(f"{contenders[0].name}+xla_defaults", cfg, mesh, host))
  skipped = None
  if fv["nanodo"].value:
    if os.path.isdir(os.path.join(fv["nanodo"].value, "nanodo")):
      contenders.append(_nanodo(fv["nanodo"].value, cfg, host))
      options = xla_options.for_platform(xla_options.STEPS, mesh)
      if options:
        contenders.append(_nanodo(fv["nanodo"].value, cfg, host, "nanodo+xla_options", options))
    else:
      skipped = f"no nanodo package under {fv['nanodo'].value}"
  out = {"model": cfg.model.name, "devices": mesh.devices.size,
         "device_kind": jax.devices()[0].device_kind, "global_batch": t.global_batch,
         "seq_len": t.seq_len, "num_layers": cfg.model.num_layers, "rounds": fv["rounds"].value,
         "steps_per_round": fv["steps"].value,
         "results": _rounds(contenders, fv["rounds"].value, fv["steps"].value,
                            t.global_batch * t.seq_len)}
  names = [c.name for c in contenders]
  if "unrolled" in names and "scan" in names:
    r = out["results"]
    out["scan_over_unrolled"] = r["scan"]["vs_ours"] / r["unrolled"]["vs_ours"]
  if "nanodo" in names:
    out["ours_over_nanodo"] = {n: out["results"][n]["vs_ours"] / out["results"]["nanodo"]["vs_ours"]
                               for n in names if not n.startswith("nanodo")}
  if "nanodo+xla_options" in names:
    base = out["results"]["nanodo+xla_options"]["vs_ours"]
    out["ours_over_nanodo_same_xla_options"] = {
        n: out["results"][n]["vs_ours"] / base for n in names
        if not n.startswith("nanodo") and not n.endswith("+xla_defaults")}
  if skipped:
    out["nanodo_skipped"] = skipped
  return out


def single(cfg: ml_collections.ConfigDict, fv) -> dict:
  """One configured step: tokens/s, MFU, compile time, peak memory."""
  t = cfg.train
  mesh = make_mesh(cfg.mesh)
  steps = fv["steps"].value
  c = _ours("ours", cfg, mesh, _host_batches(cfg, steps))
  with jax.set_mesh(mesh):
    elapsed = c.run(steps)
  tokens_per_s = steps * t.global_batch * t.seq_len / elapsed
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
      "compile_plus_first_step_s": c.compile_s, "step_time_s": elapsed / steps,
      "tokens_per_s": tokens_per_s, "flops_method": t.flops_method,
      "model_flops_per_s": tokens_per_s * per_token,
      "mfu": tokens_per_s * per_token / (devices * hardware.peak_flops(hw)),
      "peak_bytes_in_use_device0": peak_mem, "loss": float(c.last["loss"]),
  }


def main(argv: list[str]) -> dict:
  fv = parse(argv, _define, prog="python experiments/bench_train.py", config=True,
             usage="python experiments/bench_train.py --config=FILE[:PRESET] [--steps=20] "
                   "[--compare=unrolled|xla_options] [--nanodo=DIR] "
                   "[--shape=nanodo [--layers=L]]").fv
  cfg = fv["config"].value
  if fv["shape"].value == "nanodo":
    cfg.model.update(NANODO_SHAPE)
    cfg.model.name = "nanodo_shape"
    cfg.train.global_batch, cfg.train.seq_len = 32, NANODO_SHAPE["max_len"]
  if fv["layers"].value:
    cfg.model.num_layers = fv["layers"].value
  cfg = validate(cfg)
  if fv["rounds"].value < 1 or fv["steps"].value < 1:
    raise ScalingError("--rounds and --steps must be >= 1")
  if fv["compare"].value or fv["nanodo"].value:
    return compare(cfg, fv)
  return single(cfg, fv)


if __name__ == "__main__":
  try:
    print(json.dumps(main(sys.argv[1:]), indent=2))
  except ScalingError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
