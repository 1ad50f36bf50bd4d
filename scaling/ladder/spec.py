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

* `wsd`: warm-up-stable-decay trunks with cooldown branches (Hagele et al. 2024,
  arXiv:2405.18392; Hu et al. 2024, MiniCPM, Sec. 4). For each depth in `depths`, one **trunk**
  trains at a constant learning rate after its warm-up, and one **branch** per ratio r in
  `tokens_per_param` (D = r N) forks from it: the branch restores the trunk's checkpoint at its
  fork step and decays the learning rate over the final `cooldown_fraction` of its own D
  (`cooldown_shape` `linear` or `1-sqrt`), so its final eval is one (N, D) point. The fork step
  is the branch's `scaling.train.optimizer.decay_start`, and before it the branch's `wsd`
  schedule equals the trunk's `constant` one term for term, so a branch is bitwise the run it
  would be trained alone from step 0. The trunk runs to the last fork step (or to
  `trunk_tokens_per_param` x N tokens), checkpoints and evaluates at every fork step and keeps
  those checkpoints; it is not a fitted point (its evals are `mid-run` points). Every branch
  and its trunk share one learning rate, batch and warm-up: the size rules are applied at the
  largest D, the warm-up is `warmup_fraction` x the smallest branch's steps. A branch's config
  carries `branch.{parent, step}` (the trunk's run id and the fork step: part of its identity)
  and the trunk's carries `trunk.branch_steps`. Spent compute: the trunk plus each branch's
  steps after its fork, against the sum of the branches' C as independent runs.

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
* `run.train.hparam_rule="fit:PATH[,PATH]"` replaces DeepSeek's Eq. 1 by fitted laws
  (`scaling fit --law=lr|batch`) under the same bounds. Both rules are `scaling.hparam_rules`,
  the implementation `scaling train` uses too.
* a sweep's `tune` block (`scaling.ladder.tuning.tune(lr=(0.5, 1, 2))`) trains each rung once
  per variant (LR and batch multipliers around these rules, beta2 values); see that module.
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

from scaling import hardware, hparam_rules
from scaling.accounting import run_counts
from scaling.config import validate
from scaling.errors import ScalingError
from scaling.ladder import tuning
from scaling.models.shapes import ladder_shape, log_spaced_depths
from scaling.train.identity import IGNORED_FIELDS, identity_hash  # noqa: F401
from scaling.train.optimizer import DECAY_SHAPES, decay_start

# The fields left out of the run id: one rule with the workdir identity (scaling.train.identity).
SWEEP_KINDS = ("grid", "isoflop", "moe", "wsd")


@dataclasses.dataclass
class Rung:
  """One run of a ladder: its id, where it came from, its config and its counts."""

  run_id: str
  sweep: str
  label: str  # e.g. "C=1e+12 d3" (names the rung in errors and tables)
  config: ml_collections.ConfigDict
  counts: dict  # scaling.accounting.run_counts of the config
  budget: float | None = None  # the IsoFLOP budget assigned, FLOPs
  experts: int = 1
  est_time_s: float = 0.0
  holdout: bool = False  # trained, but left out of the fit and predicted by it
  role: str = "run"  # "run" (an independent run) | "trunk" | "branch" (wsd sweeps)
  parent: str | None = None  # a branch's trunk (run id)
  branch_step: int | None = None  # the trunk step a branch forks at

  @property
  def spent_flops(self) -> float:
    """FLOPs this rung itself trains: a branch only its steps after the fork."""
    steps = self.config.train.steps
    if self.branch_step is None:
      return float(self.counts["flops"])
    return float(self.counts["flops"]) * (steps - self.branch_step) / steps

  @property
  def independent_flops(self) -> float:
    """FLOPs of this rung's (N, D) point trained as an independent run (a trunk has none)."""
    return 0.0 if self.role == "trunk" else float(self.counts["flops"])

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
                est_time_s=self.est_time_s, holdout=int(self.holdout), role=self.role,
                parent_run_id=self.parent, branch_step=self.branch_step,
                cooldown_fraction=t.decay_fraction if self.role == "branch" else None,
                flops_spent=self.spent_flops, **tuning.rung_fields(self.config))


def run_id(cfg: ml_collections.ConfigDict | dict) -> str:
  """Stable id of a resolved run config: `<model.name>-<sha256 of the result-relevant fields>`."""
  d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
  name = str(d.get("model", {}).get("name", "run")) or "run"
  return f"{name}-{identity_hash(d)[:12]}"


def _apply_rules(cfg: ml_collections.ConfigDict, rules, tokens: float, flops: float,
                 where: str, variant: dict | None = None, *,
                 rule_tokens: float | None = None) -> None:
  """Fills lr, batch, steps, warm-up, eval and checkpoint cadence of one rung (see module doc);
  lr and batch by the one size-rule implementation, `scaling.hparam_rules`, times the sweep
  variant's multipliers (`scaling.ladder.tuning`)."""
  t, variant = cfg.train, variant or {}
  t.lr, t.global_batch = hparam_rules.resolve(
      hparam_rules.ladder_rule(rules, t.hparam_rule), params=run_counts(cfg)[
          "params_non_embedding"], tokens=rule_tokens or tokens, flops=max(flops, 1.0),
      seq_len=t.seq_len,
      lr=t.lr, global_batch=t.global_batch, microbatches=t.microbatches,
      bounds=hparam_rules.Bounds.from_rules(rules), lr_mult=variant.get("lr_mult", 1.0),
      batch_mult=variant.get("batch_mult", 1.0))
  tuning.apply(cfg, variant)
  mult = max(1, int(rules.batch_multiple)) * max(1, int(t.microbatches))
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
          granularity: int = 1, rule_tokens_per_param: float | None = None,
          variant: dict | None = None) -> Rung:
  """Builds and validates one rung; every error names `sweep/label`.

  `variant`: the sweep variant (`scaling.ladder.tuning.variants`) this rung trains, its tag
  appended to `label`; None for a kind that has none.

  `rule_tokens_per_param`: the size rules (lr, batch) are applied as if the rung trained that
  many tokens per parameter (the runs of one wsd trunk share them).
  """
  if variant is None:
    variant = tuning.plain(lcfg.ladder.sweeps[sweep], sweep)
  base, label = label, tuning.label(label, variant)
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
    rule_tokens = tokens
    if rule_tokens_per_param is not None:  # (N, D, C) of the rules: the shared trunk's
      rule_tokens = tokens * rule_tokens_per_param / tokens_per_param
      target_flops *= rule_tokens_per_param / tokens_per_param
    _apply_rules(cfg, rules, tokens, target_flops, where, variant, rule_tokens=rule_tokens)
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
  held = bool(sw.get("holdout", False)) or base in tuple(sw.get("holdout_rungs", ()))
  cfg.ladder = ml_collections.ConfigDict(dict(
      name=str(ladder.name), sweep=sweep, label=label, budget=budget, experts=experts,
      granularity=granularity, tokens_per_param=tokens_per_param, holdout=held,
      **tuning.labels(cfg, base, variant, tokens)))
  _eval_labels(cfg, ladder)
  rid = run_id(cfg)  # ladder labels (holdout included) are not part of the id
  cfg.run_id = rid
  peak = hardware.peak_flops(ladder.hardware) * max(1, ladder.devices) * ladder.mfu
  return Rung(rid, sweep, label, cfg, counts, budget, experts, counts["flops"] / peak, held)


def _eval_labels(cfg: ml_collections.ConfigDict, ladder) -> None:
  """`ladder.eval` into the rung's labels (`cfg.ladder.eval`, read by `runner.work`); with
  every checkpoint evaluated, the rung keeps them all (neither is part of the run id)."""
  ev = ladder.get("eval") or {}
  if not ev.get("tasks"):
    return
  if ev.get("checkpoints", "all") not in ("last", "all"):
    raise ScalingError(f"ladder.eval.checkpoints={ev.get('checkpoints')!r}; choose 'last' or "
                       "'all'")
  cfg.ladder.eval = ml_collections.ConfigDict(dict(
      tasks=str(ev.tasks), checkpoints=str(ev.get("checkpoints", "all")),
      examples=int(ev.get("examples", 256))))
  if cfg.ladder.eval.checkpoints == "all":
    t = cfg.train
    t.keep_checkpoints = max(int(t.keep_checkpoints), math.ceil(t.steps / t.checkpoint_every) + 1)


def _variants(lcfg, sweep: str, label: str, model: dict, **kw) -> list[Rung]:
  """`_rung` once per variant of the sweep's `tune` block (one plain rung without it)."""
  return tuning.distinct([_rung(lcfg, sweep, label, model, variant=v, **kw)
                          for v in tuning.variants(lcfg.ladder.sweeps[sweep], sweep)])


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
          rungs.extend(_variants(lcfg, name, f"d{depth} r{r:g}",
                                 _shape(ladder, lcfg.run, depth), tokens_per_param=float(r)))
    elif kind == "isoflop":
      for budget in sw.budgets:
        depths = _depths_for_budget(ladder, sw, float(budget))
        # A held-out budget is predicted, not profiled, so one size is enough.
        if len(depths) < (1 if sw.get("holdout", False) else 2):
          raise ScalingError(
              f"ladder rung {name}/C={budget:.3g}: only {len(depths)} distinct depth(s) "
              f"{depths} fit; raise sweeps.{name}.n_spread or count, or list sweeps.{name}.depths")
        for depth in depths:
          rungs.extend(_variants(lcfg, name, f"C={budget:.3g} d{depth}",
                                 _shape(ladder, lcfg.run, depth), budget=float(budget)))
    elif kind == "wsd":
      _check_wsd(name, sw)
      for depth in sw.depths:
        rungs.extend(_wsd_rungs(lcfg, name, sw, int(depth)))
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
          rungs.extend(_variants(lcfg, name, f"E{e} G{g}", base, moe=moe, experts=e * g,
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


def _check_wsd(name: str, sw) -> None:
  """The wsd sweep's own fields: one error naming the field and the fix."""
  f = sw.get("cooldown_fraction", 0.2)
  if not isinstance(f, (int, float)) or not 0.0 < f < 1.0:
    raise ScalingError(f"ladder.sweeps.{name}.cooldown_fraction={f!r} must be in (0, 1): the "
                       "final fraction of each branch's tokens spent cooling down (default 0.2)")
  shape = sw.get("cooldown_shape", "1-sqrt")
  if shape not in DECAY_SHAPES:
    raise ScalingError(f"ladder.sweeps.{name}.cooldown_shape={shape!r} is unknown; choose one "
                       f"of {', '.join(DECAY_SHAPES)}")
  if not len(sw.get("tokens_per_param", ())) or not len(sw.get("depths", ())):
    raise ScalingError(f"ladder.sweeps.{name} needs depths and tokens_per_param (one branch per "
                       "token count), e.g. wsd_sweep((1, 2), (5, 10, 20))")
  if sw.get("tune"):
    raise ScalingError(f"ladder.sweeps.{name}.tune: a wsd sweep takes no tune block (each "
                       "learning-rate variant would need its own trunk); sweep the learning "
                       "rate in a grid sweep, or give each variant its own wsd sweep")
  if any(float(r) <= 0 for r in sw.tokens_per_param):
    raise ScalingError(f"ladder.sweeps.{name}.tokens_per_param={tuple(sw.tokens_per_param)} "
                       "must all be positive")


def _wsd_rungs(lcfg, name: str, sw, depth: int) -> list[Rung]:
  """One trunk and its cooldown branches for one model size (module doc, kind `wsd`)."""
  ladder = lcfg.ladder
  shape = _shape(ladder, lcfg.run, depth)
  ratios = sorted({float(r) for r in sw.tokens_per_param})
  branches = [_rung(lcfg, name, f"d{depth} r{r:g}", shape, tokens_per_param=r,
                    rule_tokens_per_param=ratios[-1]) for r in ratios]
  shortest = branches[0].config.train.steps
  warmup = max(1, int(round(ladder.rules.warmup_fraction * shortest)))
  forks = []
  for b in branches:
    t = b.config.train
    t.update(schedule="wsd", decay_fraction=float(sw.get("cooldown_fraction", 0.2)),
             decay_shape=str(sw.get("cooldown_shape", "1-sqrt")), warmup_steps=warmup)
    forks.append(decay_start(t))
    if forks[-1] <= warmup:
      raise ScalingError(
          f"ladder rung {name}/{b.label}: its cooldown starts at step {forks[-1]} of "
          f"{t.steps}, inside the trunk's warm-up of {warmup} steps; lower "
          f"sweeps.{name}.cooldown_fraction or rules.warmup_fraction, or raise its "
          "tokens_per_param")
  trunk_steps = max(forks)
  if sw.get("trunk_tokens_per_param", 0.0):
    t = branches[-1].config.train
    n = branches[-1].counts["params_non_embedding"]
    trunk_steps = int(round(sw.trunk_tokens_per_param * n / (t.global_batch * t.seq_len)))
    beyond = [(b, s) for b, s in zip(branches, forks, strict=True) if s > trunk_steps]
    if beyond:
      b, s = beyond[-1]
      raise ScalingError(
          f"ladder rung {name}/{b.label}: its branch point, step {s}, is beyond the trunk's "
          f"{trunk_steps} steps (sweeps.{name}.trunk_tokens_per_param="
          f"{sw.trunk_tokens_per_param:g}); raise trunk_tokens_per_param to at least "
          f"{s * t.global_batch * t.seq_len / n:.4g} or drop that token count")
  trunk = _trunk(lcfg, name, depth, branches[-1], trunk_steps, warmup, sorted(set(forks)))
  for b, fork in zip(branches, forks, strict=True):
    b.config.branch = ml_collections.ConfigDict(dict(parent=trunk.run_id, step=fork))
    b.config.ladder.role = "branch"
    b.role, b.parent, b.branch_step = "branch", trunk.run_id, fork
    _finish(lcfg, b)
  return [trunk, *branches]


def _trunk(lcfg, name: str, depth: int, longest: Rung, steps: int, warmup: int,
           forks: list[int]) -> Rung:
  """The constant-LR trunk of a wsd sweep: the longest branch's config, cut at `steps`."""
  cfg = ml_collections.ConfigDict(longest.config.to_dict())
  rules, t = lcfg.ladder.rules, cfg.train
  t.update(steps=steps, schedule="constant", warmup_steps=warmup, decay_shape="linear")
  t.decay_fraction = lcfg.run.train.decay_fraction  # unused by `constant`: the run's default
  t.eval_every = max(1, math.ceil(steps / max(1, rules.evals)))
  t.checkpoint_every = max(1, math.ceil(steps / max(1, rules.checkpoints)))
  t.log_every = max(1, math.ceil(steps / max(1, rules.log_points)))
  # Part of the trunk's identity: a trunk with other branch points is another run (a finished
  # trunk cannot grow a checkpoint in its past).
  cfg.trunk = ml_collections.ConfigDict(dict(branch_steps=tuple(int(s) for s in forks)))
  cfg.ladder.update(label=f"d{depth} trunk", tokens_per_param=None, holdout=False, role="trunk")
  rung = Rung("", name, f"d{depth} trunk", cfg, {}, experts=longest.experts, role="trunk")
  return _finish(lcfg, rung)


def _finish(lcfg, rung: Rung) -> Rung:
  """Validates a rung's edited config and renews its id, counts and time estimate."""
  try:
    validate(rung.config)
  except ScalingError as e:
    raise ScalingError(f"ladder rung {rung.sweep}/{rung.label}: {e}") from None
  rung.counts = run_counts(rung.config)
  rung.run_id = rung.config.run_id = run_id(rung.config)
  ladder = lcfg.ladder
  peak = hardware.peak_flops(ladder.hardware) * max(1, ladder.devices) * ladder.mfu
  rung.est_time_s = rung.spent_flops / peak
  return rung


def _check_labels(ladder, rungs: list[Rung]) -> None:
  """Every label in a sweep's `holdout_rungs` names one of its rungs (typos fail here)."""
  for name, sw in ladder.sweeps.items():
    labels = {r.config.ladder.get("rung", r.label) for r in rungs if r.sweep == name}
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
      # lr_scale, lr_max, batch_multiple, min_batch, max_batch: the size rules' bounds, whose
      # defaults `scaling train` uses too (`scaling.hparam_rules.Bounds`).
      lr_rule="deepseek", batch_rule="deepseek", **dataclasses.asdict(hparam_rules.Bounds()),
      min_steps=10, warmup_fraction=0.05, evals=4, checkpoints=4, log_points=20))
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
  # Evaluations of every rung (`scaling eval` after training, by the worker of every backend):
  # tasks "" = none, else `scaling eval --tasks` (e.g. "default"); checkpoints "last" | "all"
  # (every rung then keeps its `rules.checkpoints` checkpoints); examples per synthetic task.
  lad.eval = ml_collections.ConfigDict(dict(tasks="", checkpoints="all", examples=256))
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


def wsd_sweep(depths, tokens_per_param, *, cooldown_fraction: float = 0.2,
              cooldown_shape: str = "1-sqrt", trunk_tokens_per_param: float = 0.0,
              holdout: bool = False, holdout_rungs=()) -> ml_collections.ConfigDict:
  """One constant-LR trunk per depth and a cooldown branch per token ratio (module doc).

  Args:
    depths: model sizes (`ladder_shape` depths), one trunk each.
    tokens_per_param: D / N of each branch, one (N, D) point each.
    cooldown_fraction: the final fraction of each branch's tokens spent decaying, in (0, 1)
      (Hagele et al. 2024 find 0.2 matches a cosine run).
    cooldown_shape: `linear` or `1-sqrt`.
    trunk_tokens_per_param: train the trunk this far (tokens / N); 0 = to the last fork.
  """
  return ml_collections.ConfigDict(dict(
      kind="wsd", depths=tuple(int(d) for d in depths),
      tokens_per_param=tuple(float(r) for r in tokens_per_param),
      cooldown_fraction=cooldown_fraction, cooldown_shape=cooldown_shape,
      trunk_tokens_per_param=float(trunk_tokens_per_param),
      **_holdout_fields(holdout, holdout_rungs)))
