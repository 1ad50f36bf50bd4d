"""Ladder configs -> a validated list of fully resolved run configs ("rungs"), each with a run id.

A ladder config (`configs/ladders/*.py`, `get_config(arg)`) has two blocks:

* `run`: a complete run config (`scaling.config.default_config()` plus overrides) that every
  rung starts from: data, optimizer, sequence length, vocabulary, mesh.
* `ladder`: `name`, `shape` (arguments of `scaling.models.shapes.ladder_shape`), `rules`
  (per-run training rules derived from size, below), `sweeps` (named sweeps, each with a
  `kind`), `hardware` / `devices` / `mfu` for time estimates, and the backend blocks `slurm`
  and `tpu_vm`.

Sweep kinds:

* `grid`: `depths` x `tokens_per_param` (D = r N, N non-embedding).
* `isoflop`: for each budget C in `budgets` (FLOPs, by `run.train.flops_method`), `count` sizes
  spaced evenly in log N from N*/`n_spread` to N* `n_spread` around N* = sqrt(C / 120) (the
  D = 20 N rule of Hoffmann et al. 2022, Table 3: C = 6 N D = 120 N^2), or the explicit `depths`;
  D = C / (FLOPs per token of the shape) rounded to whole steps, and the spent budget must be
  within `tolerance` of C.
* `moe`: a fixed dense shape (`depth`, so fixed active parameters) with every number of experts
  in `experts` (1 = the dense model) and granularity G in `granularity` (Krajewski et al. 2024,
  Sec. 3: expert width d_ff / G, G x as many experts and G x top-k, so active parameters stay
  fixed), trained for `tokens_per_param` x N_active tokens.

Held-out rungs: a sweep with `holdout=True` (every rung), or the labels in its `holdout_rungs`
(e.g. `("C=1e+12 d7",)`), are trained like any other run but marked `holdout` (the manifest row
and `config.ladder.holdout`), so `scaling fit` leaves them out of the fit and predicts them. A
held-out IsoFLOP budget may have a single size. One run may not be both fitted and held out.

Per-run rules (`ladder.rules`), so no rung needs hand tuning:

* learning rate: `lr_rule="deepseek"` uses eta = 0.3118 C^-0.125 (DeepSeek-AI 2024, DeepSeek
  LLM Sec. 3.1, Eq. 1; fitted on 1e17..2e19 FLOPs, extrapolated here), times `lr_scale`, capped
  at `lr_max`; `"fixed"` keeps `run.train.lr`.
* batch: `batch_rule="deepseek"` uses B = 0.2920 C^0.3271 tokens (same source), in sequences,
  rounded to a multiple of `batch_multiple` (the data-parallel width you will run on) and
  clipped to [`min_batch`, `max_batch`]; `"fixed"` keeps `run.train.global_batch`.
* steps = round(D / (batch x seq_len)) (at least `min_steps`); the cosine decays over exactly
  the run's steps (`scaling.train.optimizer.schedule`), warm-up = `warmup_fraction` x steps
  (at least 1 step), `evals` evaluations and `checkpoints` checkpoints per run.

Run ids: `<model.name>-<12 hex digits>`, the digits the SHA-256 of the resolved run config with
the fields that cannot change the numbers removed (`IGNORED_FIELDS`, shared with the workdir
identity in `scaling.train.identity`: where data is cached, how often to log, evaluate or
checkpoint, the mesh and compilation choices) and the ladder labels removed, so the same run
in two ladders (or two sweeps) is one folder, trained once.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections

from scaling import hardware
from scaling.config import validate
from scaling.errors import ScalingError
from scaling.models.shapes import ladder_shape, log_spaced_depths
from scaling.train.identity import IGNORED_FIELDS, identity_hash  # noqa: F401
from scaling.train.optimizer import deepseek_hparams

# The fields left out of the run id: one rule with the workdir identity (scaling.train.identity).
SWEEP_KINDS = ("grid", "isoflop", "moe")


@dataclasses.dataclass
class Rung:
  """One run of a ladder: its id, where it came from, its config and its counts."""

  run_id: str
  sweep: str
  label: str  # e.g. "C=1e+12 d3" (names the rung in errors and tables)
  config: ml_collections.ConfigDict
  counts: dict  # scaling.train.loop.run_counts of the config
  budget: float | None = None  # the IsoFLOP budget assigned, FLOPs
  experts: int = 1
  est_time_s: float = 0.0
  holdout: bool = False  # trained, but left out of the fit and predicted by it

  def row(self) -> dict:
    """One row of `scaling ladder show` and of the manifest."""
    m, t = self.config.model, self.config.train
    return dict(run_id=self.run_id, sweep=self.sweep, label=self.label,
                shape=f"L{m.num_layers} d{m.d_model} h{m.num_heads} ff{m.d_ff}",
                params=self.counts["params_non_embedding"],
                params_active=self.counts["params_active"],
                params_total=self.counts["params_total"], tokens=self.counts["tokens"],
                flops=self.counts["flops"], budget=self.budget, experts=self.experts,
                steps=t.steps, global_batch=t.global_batch, lr=t.lr,
                est_time_s=self.est_time_s, holdout=int(self.holdout))


def run_id(cfg: ml_collections.ConfigDict | dict) -> str:
  """Stable id of a resolved run config: `<model.name>-<sha256 of the result-relevant fields>`."""
  d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
  name = str(d.get("model", {}).get("name", "run")) or "run"
  return f"{name}-{identity_hash(d)[:12]}"


def _sig(x: float, digits: int = 4) -> float:
  """Rounds to `digits` significant digits, so configs (and run ids) stay readable and stable."""
  return float(f"{x:.{digits}g}")


def _apply_rules(cfg: ml_collections.ConfigDict, rules, tokens: float, flops: float,
                 where: str) -> None:
  """Fills lr, batch, steps, warm-up, eval and checkpoint cadence of one rung (see module doc)."""
  t = cfg.train
  lr, batch_tokens = deepseek_hparams(max(flops, 1.0))
  if rules.lr_rule == "deepseek":
    t.lr = _sig(min(rules.lr_max, lr * rules.lr_scale))
  elif rules.lr_rule != "fixed":
    raise ScalingError(f"ladder.rules.lr_rule={rules.lr_rule!r}; choose 'deepseek' or 'fixed'")
  mult = max(1, int(rules.batch_multiple)) * max(1, int(t.microbatches))
  if rules.batch_rule == "deepseek":
    batch = max(1, int(round(batch_tokens / t.seq_len / mult))) * mult
    batch = max(batch, int(math.ceil(rules.min_batch / mult)) * mult)
    if rules.max_batch:
      batch = min(batch, max(mult, int(rules.max_batch) // mult * mult))
    t.global_batch = batch
  elif rules.batch_rule != "fixed":
    raise ScalingError(f"ladder.rules.batch_rule={rules.batch_rule!r}; choose 'deepseek' or "
                       "'fixed'")
  if t.global_batch % mult:
    raise ScalingError(f"{where}: train.global_batch={t.global_batch} is not a multiple of "
                       f"ladder.rules.batch_multiple x train.microbatches = {mult}")
  steps = int(round(tokens / (t.global_batch * t.seq_len)))
  if steps < rules.min_steps:
    raise ScalingError(
        f"{where}: {tokens:.3g} tokens are only {steps} steps of {t.global_batch} x {t.seq_len} "
        f"tokens, below ladder.rules.min_steps={rules.min_steps}; give this rung more tokens "
        "(a larger budget or tokens_per_param) or a smaller batch (ladder.rules.max_batch)")
  t.steps = steps
  t.warmup_steps = min(steps - 1, max(1, int(round(rules.warmup_fraction * steps))))
  t.eval_every = max(1, math.ceil(steps / max(1, rules.evals)))
  t.checkpoint_every = max(1, math.ceil(steps / max(1, rules.checkpoints)))
  t.log_every = max(1, math.ceil(steps / max(1, rules.log_points)))
  t.hparam_rule = ""  # resolved here, explicitly: the run config says exactly what trains


def _shape(ladder, run, depth: int) -> dict:
  s = ladder.shape
  return ladder_shape(int(depth), aspect=int(s.aspect), head_dim=int(s.head_dim),
                      vocab_size=int(run.model.vocab_size), max_len=int(run.model.max_len),
                      mlp=str(s.mlp))


def _rung(lcfg, sweep: str, label: str, model: dict, *, tokens_per_param: float | None = None,
          budget: float | None = None, moe: dict | None = None, experts: int = 1,
          granularity: int = 1) -> Rung:
  """Builds and validates one rung; every error names `sweep/label`."""
  from scaling.train.loop import run_counts

  where = f"ladder rung {sweep}/{label}"
  ladder, cfg = lcfg.ladder, ml_collections.ConfigDict(lcfg.run.to_dict())
  cfg.model.update(model)
  if moe is not None:
    if "moe" not in cfg.model:
      raise ScalingError(f"{where}: MoE sweeps need the model.moe config fields, which this "
                         "version of scaling.config lacks; remove the moe sweep")
    cfg.model.moe.update(moe)
  rules = ladder.rules
  try:
    validate(cfg)
    per_token = run_counts(_with_steps(cfg, 1))["flops_per_token"]
    if budget is not None:
      tokens = budget / per_token
      target_flops = budget
    else:
      tokens = tokens_per_param * run_counts(cfg)["params_active"] if moe is not None \
          else tokens_per_param * run_counts(cfg)["params_non_embedding"]
      target_flops = tokens * per_token
    _apply_rules(cfg, rules, tokens, target_flops, where)
    validate(cfg)
  except ScalingError as e:
    msg = str(e)
    raise ScalingError(msg if msg.startswith(where) else f"{where}: {msg}") from None
  counts = run_counts(cfg)
  if budget is not None:
    spent = counts["flops"] / budget - 1
    if abs(spent) > ladder.sweeps[sweep].tolerance:
      raise ScalingError(
          f"{where}: {cfg.train.steps} steps spend {counts['flops']:.4g} FLOPs, {spent:+.1%} off "
          f"the budget {budget:.4g} (tolerance sweeps.{sweep}.tolerance="
          f"{ladder.sweeps[sweep].tolerance}); use a smaller batch or a larger budget")
  sw = ladder.sweeps[sweep]
  held = bool(sw.get("holdout", False)) or label in tuple(sw.get("holdout_rungs", ()))
  cfg.ladder = ml_collections.ConfigDict(dict(
      name=str(ladder.name), sweep=sweep, label=label, budget=budget, experts=experts,
      granularity=granularity, tokens_per_param=tokens_per_param, holdout=held))
  rid = run_id(cfg)  # ladder labels (holdout included) are not part of the id
  cfg.run_id = rid
  peak = hardware.peak_flops(ladder.hardware) * max(1, ladder.devices) * ladder.mfu
  return Rung(rid, sweep, label, cfg, counts, budget, experts, counts["flops"] / peak, held)


def _with_steps(cfg: ml_collections.ConfigDict, steps: int) -> ml_collections.ConfigDict:
  out = ml_collections.ConfigDict(cfg.to_dict())
  out.train.steps = steps
  return out


def _depths_for_budget(ladder, sw, budget: float) -> list[int]:
  if len(sw.get("depths", ())):
    return [int(d) for d in sw.depths]
  n_star = math.sqrt(budget / 120.0)
  return log_spaced_depths(n_star / sw.n_spread, n_star * sw.n_spread, int(sw.count),
                           aspect=int(ladder.shape.aspect))


def expand(lcfg: ml_collections.ConfigDict) -> list[Rung]:
  """Every rung of the ladder, validated, in sweep order; identical runs appear once.

  Raises ScalingError naming the rung on the first impossible run, before anything launches.
  """
  for block in ("run", "ladder"):
    if block not in lcfg:
      raise ScalingError(f"ladder config has no '{block}' block; see configs/ladders/cpu_demo.py")
  ladder = lcfg.ladder
  if not len(ladder.sweeps):
    raise ScalingError("ladder.sweeps is empty; add a grid, isoflop or moe sweep")
  hardware.peak_flops(ladder.hardware)  # unknown names fail here, clearly
  rungs: list[Rung] = []
  for name, sw in ladder.sweeps.items():
    kind = sw.get("kind", "")
    if kind not in SWEEP_KINDS:
      raise ScalingError(f"ladder.sweeps.{name}.kind={kind!r}; choose one of {SWEEP_KINDS}")
    if kind == "grid":
      for depth in sw.depths:
        for r in sw.tokens_per_param:
          rungs.append(_rung(lcfg, name, f"d{depth} r{r:g}", _shape(ladder, lcfg.run, depth),
                             tokens_per_param=float(r)))
    elif kind == "isoflop":
      for budget in sw.budgets:
        depths = _depths_for_budget(ladder, sw, float(budget))
        # A held-out budget is predicted, not profiled, so one size is enough.
        if len(depths) < (1 if sw.get("holdout", False) else 2):
          raise ScalingError(
              f"ladder rung {name}/C={budget:.3g}: only {len(depths)} distinct depth(s) "
              f"{depths} fit; raise sweeps.{name}.n_spread or count, or list sweeps.{name}.depths")
        for depth in depths:
          rungs.append(_rung(lcfg, name, f"C={budget:.3g} d{depth}",
                             _shape(ladder, lcfg.run, depth), budget=float(budget)))
    else:
      base = _shape(ladder, lcfg.run, sw.depth)
      for e in sw.experts:
        for g in (sw.granularity if int(e) > 1 else (1,)):
          e, g = int(e), int(g)
          if e == 1:
            moe = None
          else:
            if base["d_ff"] % g:
              raise ScalingError(f"ladder rung {name}/E{e} G{g}: d_ff={base['d_ff']} is not "
                                 f"divisible by granularity {g}; choose a divisor")
            moe = dict(num_experts=e * g, top_k=int(sw.top_k) * g,
                       expert_d_ff=base["d_ff"] // g)
          rungs.append(_rung(lcfg, name, f"E{e} G{g}", base, moe=moe, experts=e * g,
                             granularity=g, tokens_per_param=float(sw.tokens_per_param)))
  _check_labels(ladder, rungs)
  seen: dict[str, Rung] = {}
  for r in rungs:
    first = seen.setdefault(r.run_id, r)
    if first.holdout != r.holdout:
      fitted, held = (r, first) if first.holdout else (first, r)
      raise ScalingError(
          f"ladder rung {held.sweep}/{held.label} is held out but is the same run as "
          f"{fitted.sweep}/{fitted.label}, which is fitted; a run cannot be both: change one "
          "sweep's budgets or depths, or its holdout mark")
  return list(seen.values())


def _check_labels(ladder, rungs: list[Rung]) -> None:
  """Every label in a sweep's `holdout_rungs` names one of its rungs (typos fail here)."""
  for name, sw in ladder.sweeps.items():
    labels = {r.label for r in rungs if r.sweep == name}
    for lab in tuple(sw.get("holdout_rungs", ())):
      if lab not in labels:
        raise ScalingError(f"ladder.sweeps.{name}.holdout_rungs names {lab!r}, which is not a "
                           f"rung of that sweep; choose among {sorted(labels)}")


def default_ladder() -> ml_collections.ConfigDict:
  """The `ladder` block with every knob at its default (configs/ladders/* start from it)."""
  lad = ml_collections.ConfigDict()
  lad.name = "ladder"
  lad.shape = ml_collections.ConfigDict(dict(aspect=64, head_dim=64, mlp="swiglu"))
  lad.rules = ml_collections.ConfigDict(dict(
      lr_rule="deepseek", lr_scale=1.0, lr_max=0.02, batch_rule="deepseek", batch_multiple=8,
      min_batch=8, max_batch=0, min_steps=10, warmup_fraction=0.05, evals=4, checkpoints=4,
      log_points=20))
  lad.sweeps = ml_collections.ConfigDict()
  # For time estimates in `ladder show`: hardware name (scaling.hardware.PEAKS), devices per
  # run and the model FLOPs utilisation you expect.
  lad.hardware = "cpu"
  lad.devices = 1
  lad.mfu = 0.4
  lad.slurm = ml_collections.ConfigDict(dict(
      partition="", cpus_per_task=1, gpus_per_task=0, mem="", time="", max_parallel=0,
      extra="", setup=""))
  lad.tpu_vm = ml_collections.ConfigDict(dict(
      name="", zone="", project="", accelerator_type="", runtime_version="",
      queued_resource=False, spot=False, repo_dir="~/scaling", python="python3", setup=""))
  return lad


def _holdout_fields(holdout: bool, holdout_rungs) -> dict:
  """The sweep-level holdout marks: the whole sweep, or the named rung labels."""
  return dict(holdout=bool(holdout), holdout_rungs=tuple(str(x) for x in holdout_rungs))


def grid_sweep(depths, tokens_per_param, *, holdout: bool = False,
               holdout_rungs=()) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(kind="grid", depths=tuple(depths),
                                        tokens_per_param=tuple(float(r) for r in
                                                               tokens_per_param),
                                        **_holdout_fields(holdout, holdout_rungs)))


def isoflop_sweep(budgets, *, count: int = 5, n_spread: float = 4.0, depths=(),
                  tolerance: float = 0.05, holdout: bool = False,
                  holdout_rungs=()) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      kind="isoflop", budgets=tuple(float(b) for b in budgets), count=count,
      n_spread=float(n_spread), depths=tuple(depths), tolerance=float(tolerance),
      **_holdout_fields(holdout, holdout_rungs)))


def moe_sweep(depth: int, experts, granularity=(1,), *, top_k: int = 1,
              tokens_per_param: float = 20.0, holdout: bool = False,
              holdout_rungs=()) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      kind="moe", depth=depth, experts=tuple(experts), granularity=tuple(granularity),
      top_k=top_k, tokens_per_param=float(tokens_per_param),
      **_holdout_fields(holdout, holdout_rungs)))
