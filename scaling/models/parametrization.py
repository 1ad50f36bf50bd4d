"""Parametrizations: standard (`sp`) and maximal-update (`mup`), as the multipliers that the
model's initialisers, its forward pass and the optimizer read (`model.parametrization`).

μP is Yang et al. 2022 ("Tensor Programs V", arXiv:2203.03466), Table 3, the rules for Adam-type
optimisers, written relative to a base width so that hyperparameters tuned at
`model.mup_base_width` carry over to every other width. With the width multiplier
r = d_model / mup_base_width, every parameter falls in one group, read off its logical axes
(`group`; the first axis after the stacking axes `layers`/`expert` is the fan-in):

  hidden     both fan-in and fan-out grow with width (q, k, v, the attention output, the relative
             position projection, dense, shared and expert MLP matrices): initial std x r^-1/2
             (variance 1/fan_in relative to the base) and AdamW learning rate x 1/r.
  embedding  fan-in finite, fan-out the width (token and position embeddings): unchanged.
  readout    fan-in the width, fan-out finite (the untied output matrix, the MoE router): init
             and learning rate unchanged, their outputs multiplied by 1/r. This is Table 3's
             readout (init variance 1/fan_in^2, Adam LR 1/fan_in) in its equivalent multiplier
             form (their Table 8; the `mup` package's MuReadout). With tied embeddings the one
             matrix is an embedding and the logits carry the 1/r.
  vector     norm scales: unchanged.

Attention logits are q.k / head_dim instead of q.k / sqrt(head_dim) (Yang et al. 2022, Sec. 4:
q and k become correlated during training, so their product grows like head_dim), and the query
projection is initialised to zero, as Yang et al. 2022 recommend for transformers (attention is
then uniform at initialisation at every width).

Every width (d_ff, heads x head_dim, expert_d_ff) is taken to scale with d_model, as in the
ladder rule (`scaling.models.shapes.ladder_shape`), so one r serves every group. The
parametrization changes no shape: parameter counts are the same under both (tests).
Under `sp` every multiplier is 1 and the model and optimizer are exactly those without μP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import ml_collections

from scaling.config import PARAMETRIZATIONS, head_dim

__all__ = ["PARAMETRIZATIONS", "GROUPS", "attention_scale", "describe", "group",
           "group_counts", "hidden_std", "init_std_multipliers", "is_mup", "lr_multipliers",
           "output_multiplier", "param_labels", "width_mult"]
GROUPS = ("hidden", "embedding", "readout", "vector")
STACKING_AXES = ("layers", "expert")  # axes that index copies of a matrix, not its fan-in/out
WIDTH_AXES = ("embed", "heads", "kv_heads", "kv", "mlp")  # axes that grow with the width


def is_mup(m: ml_collections.ConfigDict) -> bool:
  """Whether `m` (a `model` config) uses μP; configs written before the field existed are SP."""
  return m.get("parametrization", "sp") == "mup"


def width_mult(m: ml_collections.ConfigDict) -> float:
  """r = d_model / mup_base_width under μP, 1.0 under SP."""
  return float(m.d_model) / float(m.mup_base_width) if is_mup(m) else 1.0


def group(names: tuple | None) -> str:
  """The group (module doc) of a parameter with logical axis `names` ([in..., out...] order)."""
  axes = [n for n in (names or ()) if n not in STACKING_AXES]
  if len(axes) < 2:
    return "vector"
  fan_in = axes[0] in WIDTH_AXES
  fan_out = any(a in WIDTH_AXES for a in axes[1:])
  if fan_in and fan_out:
    return "hidden"
  if fan_in:
    return "readout"
  return "embedding" if fan_out else "vector"


def lr_multipliers(m: ml_collections.ConfigDict) -> dict[str, float]:
  """AdamW learning-rate multiplier of each group (all 1.0 under SP)."""
  return {g: (1.0 / width_mult(m) if g == "hidden" else 1.0) for g in GROUPS}


def init_std_multipliers(m: ml_collections.ConfigDict) -> dict[str, float]:
  """Initial-std multiplier of each group (all 1.0 under SP); the query is zero under μP."""
  return {g: (width_mult(m) ** -0.5 if g == "hidden" else 1.0) for g in GROUPS}


def hidden_std(m: ml_collections.ConfigDict, std: float) -> float:
  """The initial std of a hidden matrix whose SP std is `std`."""
  return std * init_std_multipliers(m)["hidden"] if is_mup(m) else std


def output_multiplier(m: ml_collections.ConfigDict) -> float | None:
  """What readout outputs (logits, router logits) are multiplied by: 1/r under μP, None (no
  multiplication at all, so SP programs are unchanged) under SP."""
  return 1.0 / width_mult(m) if is_mup(m) else None


def attention_scale(m: ml_collections.ConfigDict) -> float | None:
  """The attention logit scale: 1/head_dim under μP; None under SP, which is
  `jax.nn.dot_product_attention`'s default 1/sqrt(head_dim)."""
  return 1.0 / head_dim(m) if is_mup(m) else None


def param_labels(params):
  """The group of every parameter of an NNX state (a prefix tree of `params`, labels where its
  Variables are), read from each Variable's logical axis names; for `optax.multi_transform`.

  Leaves that are plain arrays (no names) are `vector`: they keep the base learning rate.
  """
  import jax
  from flax import nnx

  from scaling.parallel.sharding import _names

  def label(v):
    return group(_names(v)) if isinstance(v, nnx.Variable) else "vector"

  return jax.tree.map(label, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def group_counts(state) -> dict[str, int]:
  """Scalars per group in an NNX Param state (abstract shapes are enough)."""
  from flax import nnx

  from scaling.parallel.sharding import _names

  out = dict.fromkeys(GROUPS, 0)
  for _, var in nnx.to_flat_state(state):
    out[group(_names(var))] += int(math.prod(var.get_value().shape))
  return out


def describe(m: ml_collections.ConfigDict, counts: Mapping[str, int] | None = None) -> dict:
  """The parametrization as `scaling info` reports it: name, base width, r, and per group its
  learning-rate and init multipliers (and parameter count when `counts` is given)."""
  lr, init = lr_multipliers(m), init_std_multipliers(m)
  groups = {g: {"lr_multiplier": lr[g], "init_std_multiplier": init[g]} for g in GROUPS}
  out_mult = output_multiplier(m)
  groups["readout"]["output_multiplier"] = 1.0 if out_mult is None else out_mult
  if counts is not None:
    for g in GROUPS:
      groups[g]["params"] = int(counts.get(g, 0))
  mup = is_mup(m)
  return {"name": "mup" if mup else "sp",
          "base_width": int(m.mup_base_width) if mup else None,
          "width_mult": width_mult(m),
          "attention_scale": "1/head_dim" if mup else "1/sqrt(head_dim)",
          "query_init": "zero" if mup else "normal",
          "groups": groups}
