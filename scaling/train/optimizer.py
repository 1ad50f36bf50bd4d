"""Optimizers, learning-rate schedules, and size-based hyper-parameter rules (optax).

Schedules span exactly `train.steps`: Hoffmann et al. 2022 (Sec. 3, Fig. A1) show that a cosine
cycle longer than the run biases the final loss upwards, so every rung decays over its own run.
"""

from __future__ import annotations

import jax
import ml_collections
import optax

from scaling.errors import ScalingError


def schedule(t: ml_collections.ConfigDict) -> optax.Schedule:
  """Learning rate by step: linear warm-up, then `cosine`, `wsd` or `constant`."""
  peak, floor = t.lr, t.lr * t.min_lr_ratio
  if t.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, peak, t.warmup_steps, max(t.steps, 1), floor)
  if t.schedule == "constant":
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, t.warmup_steps), optax.constant_schedule(peak)],
        [t.warmup_steps])
  if t.schedule == "wsd":
    # Warm-up, stable, decay (Hu et al. 2024, MiniCPM, Sec. 4.1): linear decay to the floor over
    # the final `decay_fraction` of the run.
    decay = max(1, int(round(t.decay_fraction * t.steps)))
    stable_end = max(t.warmup_steps, t.steps - decay)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, t.warmup_steps),
         optax.constant_schedule(peak),
         optax.linear_schedule(peak, floor, t.steps - stable_end)],
        [t.warmup_steps, stable_end])
  raise ScalingError(f"train.schedule={t.schedule!r}; choose cosine, wsd or constant")


def _decay_mask(params):
  """Weight decay on matrices only: not on norm scales (which are stacked [layers, d])."""
  def keep(path, leaf):
    names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
    return leaf.ndim >= 2 and not any("norm" in n for n in names)
  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(t: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clipping followed by AdamW, Adafactor or Lion with the run's schedule."""
  lr = schedule(t)
  if t.optimizer == "adamw":
    # Decoupled weight decay (Loshchilov & Hutter 2019).
    opt = optax.adamw(lr, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay,
                      mask=_decay_mask)
  elif t.optimizer == "lion":
    opt = optax.lion(lr, b1=t.b1, b2=t.b2, weight_decay=t.weight_decay, mask=_decay_mask)
  elif t.optimizer == "adafactor":
    # optax adds Adafactor's decay after the learning-rate scaling (an absolute rate per step),
    # so scale it by the peak lr to match AdamW's decoupled lr x weight_decay.
    opt = optax.adafactor(lr, weight_decay_rate=(t.weight_decay * t.lr) or None,
                          weight_decay_mask=_decay_mask)
  else:
    raise ScalingError(f"train.optimizer={t.optimizer!r}; choose adamw, adafactor or lion")
  if t.grad_clip > 0:
    opt = optax.chain(optax.clip_by_global_norm(t.grad_clip), opt)
  return opt


def deepseek_hparams(flops: float) -> tuple[float, float]:
  """Compute-optimal peak learning rate and batch size (tokens) for a budget of `flops`.

  DeepSeek-AI 2024 (DeepSeek LLM, Sec. 3.1, Eq. 1): eta_opt = 0.3118 C^-0.1250,
  B_opt = 0.2920 C^0.3271, fitted for AdamW with a multi-step schedule on 1e17..2e19 FLOPs.
  """
  return 0.3118 * flops ** -0.1250, 0.2920 * flops ** 0.3271


def apply_size_rules(cfg: ml_collections.ConfigDict, flops: float) -> None:
  """Fills `train.lr` and/or `train.global_batch` from the budget when `train.hparam_rule` asks.

  The batch is rounded to a multiple of the data-parallel width and microbatches, in sequences.
  """
  t = cfg.train
  if t.hparam_rule in ("", "none"):
    return
  if t.hparam_rule != "deepseek":
    raise ScalingError(f"train.hparam_rule={t.hparam_rule!r}; choose '' or 'deepseek'")
  lr, batch_tokens = deepseek_hparams(flops)
  t.lr = float(lr)
  step = max(1, t.microbatches) * max(1, t.get("batch_multiple", 1))
  t.global_batch = max(step, int(round(batch_tokens / t.seq_len / step)) * step)
