"""Per-rung hyperparameter mini-sweeps: the variants of a rung, the best of each, under-tuned rungs.

A sweep with a `tune` block (`ladder.sweeps.NAME.tune = tune(lr=(0.5, 1, 2))`) trains every rung
of the sweep once per variant: each combination of a learning-rate multiplier (`lr`), a batch
multiplier (`batch`) and a beta2 value (`b2`). The multipliers apply around the size rule
(`scaling.hparam_rules.resolve`), so x1 is the run the rule alone would train, the same run (and
folder) as without a sweep. Every variant is a run like any other: its lr, batch or b2 differ,
so its run id does, and its label names it (`C=1e+10 d2 lr x0.5`). `tune(seeds=k)` trains each
variant at k training seeds (`train.seed` plus 0 .. k-1, labelled `seed +1`); seed +0 is the
variant's run without seeds.

The variants of one rung, and their seeds, share a `tune_group`: the identity hash of the rung's
config at its base seed without the swept fields (`SWEPT`). Within a group:

* `sweep_best` is 1 for every seed of the variant with the lowest mean final eval loss over its
  seeds (0 for the others; a run without a finite loss, e.g. diverged, is never best, and a
  variant's mean is over its finite losses). Porian et al. 2024 ("Resolving
  discrepancies in compute-optimal scaling of language models", Sec. 4) and DeepSeek LLM
  (Sec. 3.1) tune each size this way before fitting; `scaling fit` fits the best only.
* `under_tuned` is `up` when the best learning rate is the highest of the sweep (through the
  best's batch and b2), `down` when it is the lowest, else empty: the optimum lies outside the
  sweep, and a law fitted there measures the sweep's edge. The fix is to extend the sweep that
  way (`hint`).

Rows are dicts with `loss`, `lr` and optionally `lr_mult`, `batch_tokens`, `batch_mult`, `b2`,
`tune_group`, `params`, `tokens` (a results row, a status row, a table row); rows without a
`tune_group` are grouped by (params, tokens).
"""

from __future__ import annotations

import itertools
import math

import ml_collections

from scaling.errors import ScalingError

SWEPT = ("train.lr", "train.global_batch", "train.steps", "train.warmup_steps", "train.b2")
COLUMNS = ("lr", "lr_mult", "batch_tokens", "batch_mult", "b2", "seed", "tune_group",
           "sweep_best", "under_tuned")
# For each swept quantity: the row key of its value, of its multiplier, and its name in words.
_PARAMS = {"lr": ("lr", "lr_mult", "LR"), "batch": ("batch_tokens", "batch_mult", "batch"),
           "b2": ("b2", None, "beta2")}


def tune(lr=(1.0,), batch=(1.0,), b2=(), seeds: int = 1) -> ml_collections.ConfigDict:
  """A sweep's `tune` block: LR multipliers, batch multipliers and beta2 values (empty: the run
  block's `train.b2`) to train every rung at, each with `seeds` training seeds (`train.seed`,
  `train.seed + 1`, ...)."""
  return ml_collections.ConfigDict(dict(lr=tuple(float(x) for x in lr),
                                        batch=tuple(float(x) for x in batch),
                                        b2=tuple(float(x) for x in b2), seeds=int(seeds)))


def _fmt(x: float) -> str:
  return f"{x:g}"


def variants(sw, sweep: str) -> list[dict]:
  """Every variant of sweep `sweep` (config `sw`), as `{lr_mult, batch_mult, b2, seed, tag}`
  (`seed`: the offset added to `train.seed`); one plain variant (`{}`) when the sweep has no
  `tune` block.

  Raises:
    ScalingError: a non-positive multiplier, a b2 outside (0, 1), a repeated value, or fewer
      than one seed.
  """
  t = sw.get("tune")
  if t is None:
    return [{}]
  lrs, batches = tuple(t.get("lr", (1.0,))) or (1.0,), tuple(t.get("batch", (1.0,))) or (1.0,)
  b2s = tuple(t.get("b2", ())) or (None,)
  for key, vals, ok, what in (("lr", lrs, lambda v: v > 0, "positive multipliers"),
                              ("batch", batches, lambda v: v > 0, "positive multipliers"),
                              ("b2", b2s, lambda v: v is None or 0 < v < 1, "values in (0, 1)")):
    if not all(ok(v) for v in vals) or len(set(vals)) != len(vals):
      raise ScalingError(f"ladder.sweeps.{sweep}.tune.{key}={vals}: give distinct {what}, e.g. "
                         "tune(lr=(0.5, 1, 2))")
  seeds = t.get("seeds", 1)
  if not isinstance(seeds, int) or seeds < 1:
    raise ScalingError(f"ladder.sweeps.{sweep}.tune.seeds={seeds!r}: give a whole number of "
                       "seeds per variant, at least 1, e.g. tune(seeds=4)")
  out = []
  for lr, batch, b2, seed in itertools.product(lrs, batches, b2s, range(seeds)):
    tag = " ".join(p for p in (f"lr x{_fmt(lr)}" if len(lrs) > 1 else "",
                               f"B x{_fmt(batch)}" if len(batches) > 1 else "",
                               f"b2 {_fmt(b2)}" if b2 is not None and len(b2s) > 1 else "",
                               f"seed +{seed}" if seeds > 1 else "") if p)
    out.append(dict(lr_mult=float(lr), batch_mult=float(batch), b2=b2, seed=seed, tag=tag))
  return out


def label(base: str, variant: dict) -> str:
  """The rung's label with its variant's tag (`C=1e+10 d2 lr x0.5`)."""
  return f"{base} {variant['tag']}" if variant.get("tag") else base


def distinct(rungs: list) -> list:
  """The variants of one rung (`scaling.ladder.spec.Rung`s), refused when two are the same run
  (e.g. a batch multiplier that rounds back to the batch multiple): one would be trained under
  the other's label."""
  seen: dict[str, object] = {}
  for r in rungs:
    other = seen.setdefault(r.run_id, r)
    if other is not r:
      t = r.config.train
      raise ScalingError(
          f"ladder rung {r.sweep}/{other.label} and {r.label} are the same run (lr {t.lr:.4g}, "
          f"batch {t.global_batch}, b2 {t.b2:g}): the variants round to one another; drop one "
          f"from ladder.sweeps.{r.sweep}.tune")
  return rungs


def apply(cfg: ml_collections.ConfigDict, variant: dict) -> None:
  """Sets the variant's beta2 and seed (the multipliers are `hparam_rules.resolve`'s)."""
  if variant.get("b2") is not None:
    cfg.train.b2 = float(variant["b2"])
  cfg.train.seed = int(cfg.train.seed) + int(variant.get("seed", 0))


def plain(sw, sweep: str) -> dict:
  """The variant of a rung built outside `variants` (a kind that does not expand them, e.g.
  `wsd`); refuses a `tune` block such a sweep would silently ignore."""
  if sw.get("tune") is not None:
    raise ScalingError(f"ladder.sweeps.{sweep}.tune: sweeps of kind {sw.get('kind')!r} do not "
                       "take hyperparameter variants; tune a grid, isoflop or moe sweep")
  return {}


def group(cfg: ml_collections.ConfigDict, tokens: float, seed_offset: int = 0) -> str:
  """`g-<12 hex>`: the identity hash of a resolved rung config without the `SWEPT` fields, plus
  its planned tokens D (steps are swept with the batch), shared by every variant of the rung
  (and by the same rung in another sweep). A seeded variant (`seed_offset`, `tune(seeds=k)`)
  is hashed at its base seed, so its rung keeps the group it had before seeds existed."""
  from scaling.train.identity import identity_hash

  d = cfg.to_dict()
  d["train"]["seed"] = int(d["train"]["seed"]) - int(seed_offset)
  for path in SWEPT:
    *parents, leaf = path.split(".")
    node = d
    for p in parents:
      node = node.get(p, {})
    node.pop(leaf, None)
  d["planned_tokens"] = f"{float(tokens):.6g}"
  return "g-" + identity_hash(d)[:12]


def labels(cfg: ml_collections.ConfigDict, base: str, variant: dict, tokens: float) -> dict:
  """The tuning fields of a rung's `config.ladder` labels (outside its run id)."""
  return dict(rung=base, lr_mult=variant.get("lr_mult", 1.0),
              batch_mult=variant.get("batch_mult", 1.0), b2=variant.get("b2"),
              tune_group=group(cfg, tokens, variant.get("seed", 0)))


def _group_of(lab: dict):
  # A wsd trunk copies its longest branch's labels, but is no variant of that branch.
  return None if lab.get("role") == "trunk" else lab.get("tune_group")


def rung_fields(cfg: ml_collections.ConfigDict) -> dict:
  """The tuning fields of a ladder manifest row (`Rung.row`), for `ladder status`."""
  lab = cfg.get("ladder") or {}
  return dict(lr_mult=lab.get("lr_mult"), batch_mult=lab.get("batch_mult"),
              b2=float(cfg.train.b2), seed=int(cfg.train.seed), tune_group=_group_of(lab))


def row_fields(config: dict) -> dict:
  """The tuning columns a run record's config gives (`lr`, `batch_tokens`, `b2`, multipliers,
  `tune_group`); None where the config does not say."""
  t, lab = config.get("train") or {}, config.get("ladder") or {}
  batch = t.get("global_batch")
  seq = t.get("seq_len")
  return dict(lr=t.get("lr"), lr_mult=lab.get("lr_mult"),
              batch_tokens=batch * seq if batch and seq else None,
              batch_mult=lab.get("batch_mult"), b2=t.get("b2"), seed=t.get("seed"),
              tune_group=_group_of(lab))


def _num(v) -> float | None:
  """A finite float from a row value (numbers, or strings from a CSV), else None."""
  try:
    x = float(v)
  except (TypeError, ValueError):
    return None
  return x if math.isfinite(x) else None


def groups(rows: list[dict]) -> list[list[int]]:
  """Row indices per tuning group, in first-seen order."""
  by: dict = {}
  for i, r in enumerate(rows):
    key = r.get("tune_group")
    if key in (None, "", "None", "nan"):  # a table's empty cell: group by (N, D)
      key = ("N,D", _num(r.get("params")), _num(r.get("tokens")))
    by.setdefault(key, []).append(i)
  return list(by.values())


VARIANT_COLUMNS = tuple(key for key, _, _ in _PARAMS.values())  # lr, batch_tokens, b2


def variant_of(row: dict) -> tuple:
  """What tells a row's variant from the other variants of its rung (its swept values, not its
  seed): the key under which `best_of`, `mark` and the fit's `average_seeds` group seeds."""
  return tuple(_num(row.get(c)) for c in VARIANT_COLUMNS)


def best_of(rows: list[dict], idx: list[int]) -> int | None:
  """The first index (of `idx`) of the variant with the lowest mean finite loss over its seeds;
  None when no row has one. Seeds are averaged, not raced: the luckiest seed of a variant is no
  evidence that the variant is better."""
  by: dict[tuple, list] = {}
  for i in idx:
    v = _num(rows[i].get("loss"))
    if v is not None:
      by.setdefault(variant_of(rows[i]), []).append((v, i))
  if not by:
    return None
  return min((sum(v for v, _ in m) / len(m), m[0][1]) for m in by.values())[1]


def siblings(rows: list[dict], idx: list[int], best: int, param: str) -> list[int]:
  """The rows of `idx` that differ from the best only in `param` (`lr`, `batch` or `b2`)."""
  keys = [_PARAMS[p][0] for p in _PARAMS if p != param]
  return [i for i in idx if all(_num(rows[i].get(k)) == _num(rows[best].get(k)) for k in keys)]


def edge(rows: list[dict], idx: list[int], best: int, param: str = "lr") -> str:
  """`up` / `down` when the best row's `param` is the highest / lowest of its sweep through the
  best (two or more values), else ''."""
  key = _PARAMS[param][0]
  vals = {_num(rows[i].get(key)) for i in siblings(rows, idx, best, param)} - {None}
  here = _num(rows[best].get(key))
  if len(vals) < 2 or here is None:
    return ""
  return "up" if here == max(vals) else "down" if here == min(vals) else ""


def mark(rows: list[dict]) -> list[dict]:
  """Adds `sweep_best` (1/0: every seed of the best variant is 1) and `under_tuned`
  (`up`/`down`/'') to every row, in place."""
  for idx in groups(rows):
    best = best_of(rows, idx)
    flag = edge(rows, idx, best) if best is not None else ""
    won = variant_of(rows[best]) if best is not None else None
    for i in idx:
      rows[i]["sweep_best"] = int(won is not None and variant_of(rows[i]) == won)
      rows[i]["under_tuned"] = flag
  return rows


def hint(direction: str, mult=None, value=None, param: str = "lr") -> str:
  """What to do about an under-tuned rung: `its best LR (x2) is the top of its sweep: extend
  the LR sweep above x2`."""
  name = _PARAMS[param][2]
  at = f"x{_fmt(float(mult))}" if _num(mult) is not None else (
      f"{float(value):.4g}" if _num(value) is not None else "its edge")
  top = direction == "up"
  return (f"its best {name} ({at}) is the {'top' if top else 'bottom'} of its sweep: extend "
          f"the {name} sweep {'above' if top else 'below'} {at}")


def warnings(rows: list[dict], name=lambda r: r.get("run_id")) -> list[str]:
  """One `warning:` line per under-tuned group (rows already `mark`ed), naming its best run."""
  out = []
  for idx in groups(rows):
    best = next((i for i in idx if rows[i].get("sweep_best")), None)
    if best is None or not rows[best].get("under_tuned"):
      continue
    r = rows[best]
    out.append(f"warning: under_tuned: {name(r)}: "
               + hint(r["under_tuned"], r.get("lr_mult"), r.get("lr")))
  return out


def mark_status(manifest_rows: list[dict], states: list[dict]) -> list[str]:
  """`ladder status`: adds `sweep_best`, `under_tuned` and `tune` (the table's cell) to each run
  state (aligned with the manifest rows), judged on the complete runs; returns the warning
  lines."""
  rows = []
  for m, s in zip(manifest_rows, states, strict=True):
    rows.append(dict(tune_group=m.get("tune_group"), params=m.get("params"),
                     tokens=m.get("tokens"), lr=m.get("lr"), lr_mult=m.get("lr_mult"),
                     batch_tokens=m.get("global_batch"), b2=m.get("b2"), seed=m.get("seed"),
                     loss=s.get("eval_loss") if s.get("state") == "complete" else None,
                     rung=s.get("rung")))
  mark(rows)
  size = {i: len({variant_of(rows[j]) for j in idx}) for idx in groups(rows) for i in idx}
  for i, (r, s) in enumerate(zip(rows, states, strict=True)):
    s["sweep_best"], s["under_tuned"] = r["sweep_best"], r["under_tuned"]
    # The `tune` column: which variant of a swept rung is best so far, and whether it is at an
    # edge ('-' where the rung has one variant, however many seeds).
    s["tune"] = ("best" + (f" (under-tuned: {r['under_tuned']})" if r["under_tuned"] else "")
                 if r["sweep_best"] and size[i] > 1 else "-")
  return warnings(rows, name=lambda r: r["rung"])
