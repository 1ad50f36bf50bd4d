"""The coordinate check (Yang et al. 2022, "Tensor Programs V", arXiv:2203.03466; the `mup`
package's `get_coord_data`): train the same model at several widths for a few steps and watch
the size of each activation. Under μP every activation's typical coordinate stays the same size
as the width grows; under SP with a width-independent learning rate the logits (and the hidden
branches) grow with width, the instability μP removes.

`coord_check` trains each width with the run's own train step and optimizer
(`scaling.train.step.make_steps`, `scaling.train.optimizer.make_optimizer`: the per-group
learning rates included) on the same batches, and after the chosen steps records
`Transformer.coordinates`: the mean |activation| of the embedding output, every block's
attention and feed-forward branch, and the logits, on one fixed batch. `spreads` is the ratio
largest / smallest over the widths of each coordinate at each step.

Widths change d_model and d_ff (d_ff / d_model kept) with the number of heads fixed, so the
head dimension grows with the width too and the attention scale is exercised.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx

from scaling.models.dense import build_model
from scaling.train.optimizer import make_optimizer
from scaling.train.step import make_steps

Batch = dict  # {"inputs", "targets": int32 [B, L], "mask": float32 [B, L]}


def width_config(base: ml_collections.ConfigDict, width: int,
                 parametrization: str) -> ml_collections.ConfigDict:
  """`base` at d_model = `width` (d_ff scaled with it, heads fixed) under `parametrization`."""
  cfg = ml_collections.ConfigDict(base.to_dict())
  m = cfg.model
  ratio = m.d_ff / m.d_model
  m.update(d_model=int(width), d_ff=int(round(ratio * width)), head_dim=0,
           parametrization=parametrization)
  return cfg


def random_batches(vocab_size: int, batch: int, seq_len: int, count: int,
                   seed: int = 0) -> list[Batch]:
  """`count` batches of uniform random tokens (for checks that need no real language)."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(count):
    tokens = rng.integers(0, vocab_size, (batch, seq_len + 1)).astype(np.int32)
    out.append({"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
                "mask": np.ones((batch, seq_len), np.float32)})
  return out


def _train_and_measure(cfg: ml_collections.ConfigDict, batches: Callable[[int], Batch],
                       probe: Batch, record_at: Sequence[int],
                       seeds: int) -> dict[int, dict[str, float]]:
  """Coordinates after each step in `record_at`, averaged over `seeds` initialisations (one
  compiled step serves them all: the seed changes the parameters, not the program)."""
  optimizer = make_optimizer(cfg.train, cfg.model)
  sums: dict[int, dict[str, float]] = {}
  for seed in range(seeds):
    graphdef, params = nnx.split(build_model(cfg, seed=cfg.train.seed + seed))
    if seed == 0:
      train_step = make_steps(graphdef, cfg, optimizer)[0]

      # One program per width: the step, then the coordinates of the updated parameters (a
      # forward pass on the probe, cheap beside the step; one compile instead of two).
      @jax.jit
      def step_and_measure(state, batch, tokens, g=graphdef, train_step=train_step):
        state, _ = train_step(state, batch)
        return state, nnx.merge(g, state["params"]).coordinates(tokens)[0]

    state = {"step": np.int32(0), "params": params, "opt_state": optimizer.init(params)}
    for step in range(1, max(record_at) + 1):
      state, got = step_and_measure(state, batches(step - 1), probe["inputs"])
      if step in record_at:
        acc = sums.setdefault(step, {})
        for k, v in got.items():
          acc[k] = acc.get(k, 0.0) + float(v) / seeds
  return sums


def coord_check(base: ml_collections.ConfigDict, widths: Sequence[int], parametrization: str,
                batches: Callable[[int], Batch], *, record_at: Sequence[int] = (1, 5, 10),
                seeds: int = 1) -> dict:
  """Trains `base` at each width for max(record_at) steps on `batches(step)` (the same for
  every width) and records the coordinates after each step in `record_at`, averaged over
  `seeds` initialisations (Yang et al. average over seeds too: at small widths one draw's
  coordinates scatter by tens of percent).

  The probe batch is `batches(0)`. Returns
  `{"parametrization", "widths", "seeds", "coordinates": {step: {name: [value per width]}},
  "spreads": spreads(...)}`, values in the model's activation units.
  """
  per_width = [_train_and_measure(width_config(base, w, parametrization), batches, batches(0),
                                  record_at, seeds) for w in widths]
  coords = {step: {name: [pw[step][name] for pw in per_width] for name in per_width[0][step]}
            for step in record_at}
  return {"parametrization": parametrization, "widths": list(widths), "seeds": seeds,
          "coordinates": coords, "spreads": spreads(coords)}


def spreads(coords: dict) -> dict:
  """max / min over the widths of every coordinate at every step: `{step: {name: ratio}}`."""
  return {step: {name: max(v) / min(v) if min(v) > 0 else float("inf")
                 for name, v in by_name.items()} for step, by_name in coords.items()}


def growth(coords: dict, name: str, step: int) -> float:
  """The coordinate `name` at the largest width over the smallest, at `step` (signed trend,
  unlike the spread)."""
  v = coords[step][name]
  return v[-1] / v[0] if v[0] > 0 else float("inf")


def language_batches(batch: int, seq_len: int, count: int, seed: int = 0,
                     **spec) -> list[Batch]:
  """`count` batches of the synthetic language (`scaling.data.synthetic`, knobs `spec`),
  sampled in memory: windows of a stream of i.i.d. documents, scored targets masked as the
  data pipeline masks them."""
  from scaling.data import synthetic

  lang = synthetic.SyntheticLanguage(synthetic.SyntheticSpec(**spec))
  rng = np.random.default_rng(seed)
  need = count * batch * (seq_len + 1)
  docs = lang.sample_documents(rng, -(-need // lang.spec.doc_length)).reshape(-1)[:need]
  windows = docs.reshape(count, batch, seq_len + 1).astype(np.int32)
  return [{"inputs": w[:, :-1], "targets": w[:, 1:],
           "mask": synthetic.target_mask(w, lang.spec.marker_digits)} for w in windows]
