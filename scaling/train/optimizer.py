"""Optimizers and learning-rate schedules (optax); the size rules that pick a run's learning
rate and batch are `scaling.hparam_rules`.

Schedules span exactly `train.steps`: Hoffmann et al. 2022 (Sec. 3, Fig. A1) show that a cosine
cycle longer than the run biases the final loss upwards, so every rung decays over its own run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from scaling.errors import ScalingError

DECAY_SHAPES = ("linear", "1-sqrt")


def decay_start(t: ml_collections.ConfigDict) -> int:
  """The first step of the `wsd` schedule's decay: `steps - round(decay_fraction x steps)`.

  A cooldown branch of a ladder forks from its trunk at exactly this step
  (`scaling.ladder.spec`), so both sides use this one function.
  """
  decay = max(1, int(round(t.decay_fraction * t.steps)))
  return max(int(t.warmup_steps), int(t.steps) - decay)


def cooldown(peak: float, floor: float, steps: int, shape: str) -> optax.Schedule:
  """peak -> floor over `steps` steps (count 0 = the first decayed step), then `floor`.

  `linear` is MiniCPM's decay (Hu et al. 2024, Sec. 4.1); `1-sqrt` is
  lr = floor + (peak - floor) (1 - sqrt(count / steps)) (Hagele et al. 2024, arXiv:2405.18392,
  Sec. 3, the cooldown shape they find best).
  """
  if shape == "linear":
    return optax.linear_schedule(peak, floor, steps)
  if shape == "1-sqrt":
    def one_minus_sqrt(count):
      frac = jnp.clip(count / steps, 0.0, 1.0)
      return floor + (peak - floor) * (1.0 - jnp.sqrt(frac))
    return one_minus_sqrt
  raise ScalingError(f"train.decay_shape={shape!r} is unknown; choose one of {DECAY_SHAPES}")


def schedule(t: ml_collections.ConfigDict) -> optax.Schedule:
  """Learning rate by step: linear warm-up, then `cosine`, `wsd` or `constant`.

  `wsd` and `constant` share their warm-up and stable phases term for term (one
  `optax.join_schedules`, the decay joined last), so a run of either gets bitwise the same
  learning rate at every step before `decay_start`: what lets a cooldown branch restored from a
  constant-LR trunk continue the trunk exactly. (Jitted as XLA compiles by default; its older
  CPU fusion emitters, `--xla_cpu_use_fusion_emitters=false`, round some warm-up rates of the
  two programs 1 ulp apart.)
  """
  peak, floor = t.lr, t.lr * t.min_lr_ratio
  if t.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, peak, t.warmup_steps, max(t.steps, 1), floor)
  stable = [optax.linear_schedule(0.0, peak, t.warmup_steps), optax.constant_schedule(peak)]
  if t.schedule == "constant":
    return optax.join_schedules(stable, [t.warmup_steps])
  if t.schedule == "wsd":
    # Warm-up, stable, decay (Hu et al. 2024, MiniCPM, Sec. 4.1): decay to the floor over the
    # final `decay_fraction` of the run, in the shape `decay_shape`.
    if not 0.0 < t.decay_fraction <= 1.0:
      raise ScalingError(f"train.decay_fraction={t.decay_fraction} must be in (0, 1]: the "
                         "fraction of the run's steps spent decaying (default 0.2)")
    start = decay_start(t)
    decay = cooldown(peak, floor, t.steps - start, str(t.get("decay_shape", "linear")))
    return optax.join_schedules(stable + [decay], [t.warmup_steps, start])
  raise ScalingError(f"train.schedule={t.schedule!r}; choose cosine, wsd or constant")


def _decay_mask(params):
  """Weight decay on matrices only: not on norm scales (which are stacked [layers, d])."""
  def keep(path, leaf):
    names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
    return leaf.ndim >= 2 and not any("norm" in n for n in names)
  return jax.tree_util.tree_map_with_path(keep, params)


def group_lr(m: ml_collections.ConfigDict | None) -> optax.GradientTransformation | None:
  """Per-group learning-rate multipliers of the model's parametrization, applied after the
  optimizer (so a group's decoupled weight decay, lr x wd, scales with its rate, as in the
  `mup` package's MuAdam): under μP hidden matrices get 1/r (Yang et al. 2022, Table 3;
  `scaling.models.parametrization`). None under SP or without a model config: nothing is added
  to the chain, so SP optimizers and their states are exactly those without μP.
  """
  from scaling.models import parametrization

  if m is None or not parametrization.is_mup(m):
    return None
  mults = parametrization.lr_multipliers(m)
  return optax.multi_transform(
      {g: optax.identity() if v == 1.0 else optax.scale(v) for g, v in mults.items()},
      parametrization.param_labels)


def make_optimizer(t: ml_collections.ConfigDict,
                   m: ml_collections.ConfigDict | None = None,
                   lr: optax.Schedule | None = None) -> optax.GradientTransformation:
  """Global-norm clipping followed by AdamW, Adafactor or Lion with the run's schedule, then
  the per-group learning-rate multipliers of `m`'s parametrization (`group_lr`; μP only).

  The clipping threshold applies to the raw gradient, before any multiplier. `lr` replaces the
  schedule (the train step passes the rate it is given: see `scaling.train.step.make_steps`);
  the optimizer's state is the same either way.
  """
  lr = schedule(t) if lr is None else lr
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
  if (per_group := group_lr(m)) is not None:
    opt = optax.chain(opt, per_group)
  if t.grad_clip > 0:
    opt = optax.chain(optax.clip_by_global_norm(t.grad_clip), opt)
  return opt
