"""Is an 'emergent' jump real or a metric artifact? (Schaeffer et al. 2023, "Are Emergent
Abilities of Large Language Models a Mirage?", arXiv:2304.15004), on checkpoints trained here.

`scaling fit LADDER --law=emergence [--task=recall]` reads every run's `evals.jsonl` (`scaling
eval`, `ladder.eval.*`): each task scored three ways on the same checkpoints, per-token NLL of
the answer, per-token accuracy and whole-answer exact match (`scaling.evals.tasks`). Against
training compute C (the final checkpoint of each run, or `--points=all` for every checkpoint),
it measures how sharply each metric rises:

* `span`: the decades of compute between the points where the metric has made 10% and 90% of
  its rise from the smallest-compute point to the largest (the monotone envelope of the curve,
  interpolated linearly in log10 C); a metric that "emerges" does its rise in few decades;
* `sharpness_ratio` = span(NLL) / span(exact match): above 1, exact match looks sharper than
  the answer's likelihood on the very same checkpoints;
* `max_step_share`: the share of the whole rise made between two adjacent points (`sharpness`).

and predicts exact match from per-token accuracy p as p^k, k the answer's tokens (Schaeffer et
al. 2023, Sec. 2: if tokens were right independently, exact match would be p^k). Exact match
above p^k means errors cluster in the same answers (a context is known or not).

`metrics`, `sharpness` and `synthetic_demo` keep the idealised demonstration (a logistic p(N)),
for comparison.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from scaling.errors import ScalingError

METRICS = ("nll", "token_accuracy", "exact_match")
LEVELS = (0.1, 0.9)  # the span is measured between these fractions of the rise
NOISE_SE = 2.0  # a rise within this many standard errors (first vs last point) is noise


def metrics(token_probs) -> dict[str, np.ndarray]:
  """Scores each model on the same examples three ways.

  Args:
    token_probs: `[models, examples, tokens]` probabilities (or 0/1 correctness) of the correct
      token; ragged answers can be padded with 1.0 (a padded token is always right).

  Returns:
    dict of `[models]` arrays: `exact_match` (expected fraction of examples with every token
    right, product over tokens), `token_accuracy` (mean per-token probability), and
    `log_likelihood` (mean over examples of the summed log-probability, nats).
  """
  p = np.asarray(token_probs, np.float64)
  if p.ndim != 3:
    raise ScalingError(f"token_probs must be [models, examples, tokens]; got shape {p.shape}")
  if np.any((p < 0) | (p > 1)) or not np.isfinite(p).all():
    raise ScalingError("token_probs must be probabilities in [0, 1]")
  return {"exact_match": p.prod(-1).mean(-1), "token_accuracy": p.mean((-1, -2)),
          "log_likelihood": np.log(np.maximum(p, 1e-300)).sum(-1).mean(-1)}


def sharpness(x, y) -> float:
  """Share of a metric's total rise that happens between two adjacent ladder rungs (0..1).

  1/(rungs - 1) for a perfectly even rise in log-size; near 1 when it all happens in one step,
  which is what reads as 'emergence' on a plot.
  """
  order = np.argsort(np.asarray(x))
  y = np.asarray(y, np.float64)[order]
  total = y[-1] - y[0]
  if total <= 0:
    return float("nan")
  return float(np.max(np.diff(y)) / total)


def synthetic_demo(params=None, ks=(1, 4, 8), n0: float = 1e9, slope: float = 0.8,
                   p_max: float = 0.98) -> dict:
  """Schaeffer et al.'s demonstration: per-digit accuracy rises smoothly with N, exact match
  on K-digit answers (p^K) looks sudden.

  Per-token accuracy is a logistic in log N, p(N) = p_max / (1 + (N / n0)^-slope), smooth on a
  log axis; exact match is p(N)^K.

  Returns:
    dict with `params` (N), `token_accuracy` p(N), `exact_match` {K: p^K},
    `log_likelihood` {K: K log p}, and `sharpness` {K: share of rise in the steepest step}.
  """
  n = np.geomspace(1e7, 1e12, 11) if params is None else np.asarray(params, np.float64)
  p = p_max / (1.0 + (n / n0) ** (-slope))
  em = {int(k): p ** k for k in ks}
  return {"params": n, "token_accuracy": p, "exact_match": em,
          "log_likelihood": {int(k): k * np.log(p) for k in ks},
          "sharpness": {int(k): sharpness(np.log(n), em[k]) for k in ks}}


def plot_demo(stem: str, demo: dict | None = None) -> list[str]:
  """Three panels: per-token accuracy, exact match for each K, log-likelihood, against N."""
  from scaling.fit.plots import COLUMN, _plt, _save

  plt = _plt()
  demo = demo or synthetic_demo()
  n = demo["params"]
  fig, axes = plt.subplots(1, 3, figsize=(COLUMN[0] * 2, COLUMN[1] * 0.9))
  axes[0].plot(n, demo["token_accuracy"], "o-", ms=2.5, color="k")
  axes[0].set_ylabel("per-token accuracy p(N)")
  for j, (k, v) in enumerate(demo["exact_match"].items()):
    axes[1].plot(n, v, "o-", ms=2.5, color=f"C{j}", label=f"K = {k}")
    axes[2].plot(n, demo["log_likelihood"][k], "o-", ms=2.5, color=f"C{j}", label=f"K = {k}")
  axes[1].set_ylabel("exact match p(N)^K")
  axes[2].set_ylabel("log-likelihood K log p (nats)")
  axes[1].legend(frameon=False)
  for ax in axes:
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
  axes[1].set_title("same ability, three metrics (Schaeffer et al. 2023)")
  return _save(fig, stem)


# ------------------------------------------------------------------ evals of a trained ladder


@dataclasses.dataclass
class Point:
  """One evaluated checkpoint of one run.

  Attributes:
    run_id: the run; step: its checkpoint step; final: whether it is the run's last step.
    params: N (non-embedding); tokens: D seen at the step; flops: C spent to the step (the
      run's accounting, pro rata over its tokens).
    holdout: the ladder marked the run held out.
    values: `{"task/metric": value}` at this checkpoint.
    folder: the run folder (None for a table row).
    counts: `{"task/metric": n}`, what each value averages over (problems, tokens), when known.
  """

  run_id: str
  step: int
  final: bool
  params: float
  tokens: float
  flops: float
  holdout: bool
  values: dict[str, float]
  folder: object = None
  counts: dict[str, int] = dataclasses.field(default_factory=dict)


def load_points(path: str, *, strict: bool = False) -> list[Point]:
  """Every evaluated checkpoint of a ladder workdir (complete runs, wsd trunks left out), or
  the final rows of a results table (`scaling results collect` with `task/metric` columns).

  Raises:
    ScalingError: nothing evaluated, naming the command that makes the evals.
  """
  from scaling import storage

  if storage.Path(path).is_dir():
    points = _workdir_points(path, strict)
  else:
    points = _table_points(path)
  if not points:
    raise ScalingError(f"{path}: no evaluated checkpoints (no evals.jsonl lines, or no "
                       "task/metric columns); run `scaling eval RUN_DIR --checkpoints=all` on "
                       "each run, or set ladder.eval.tasks and run the ladder again")
  return points


def _workdir_points(path: str, strict: bool) -> list[Point]:
  from scaling.evals import records
  from scaling.ladder import results

  found = results.read_run_records(path)
  results.report_unreadable(found.unreadable, strict=strict)
  out = []
  for folder, r in found.records:
    cfg = r.config or {}
    if r.status != "complete" or cfg.get("trunk") or not r.tokens:
      continue  # unfinished runs and wsd trunks (mid-run points) are not ladder points
    by_step: dict[int, dict] = {}
    counts: dict[int, dict] = {}
    tokens: dict[int, float] = {}
    for line in records.read(folder):
      step, key = int(line["step"]), f"{line['task']}/{line['metric']}"
      by_step.setdefault(step, {})[key] = float(line["value"])
      counts.setdefault(step, {})[key] = int(line["n"] or 0)
      tokens[step] = float(line["tokens"])
    last = int(r.steps_done or r.steps or 0)
    held = bool((cfg.get("ladder") or {}).get("holdout"))
    for step, values in sorted(by_step.items()):
      out.append(Point(r.run_id or folder.name, step, step == last,
                       float(r.params_non_embedding), tokens[step],
                       float(r.flops) * tokens[step] / float(r.tokens), held, values, folder,
                       counts[step]))
  return out


def _table_points(path: str) -> list[Point]:
  from scaling.fit import table as table_lib
  from scaling.fit import validation

  t = table_lib.load_table(path)
  held = validation.holdout_mask(t)
  cols = [c for c in t.extra if "/" in c]
  out = []
  for i in range(len(t)):
    values = {}
    for c in cols:
      try:
        values[c] = float(t.extra[c][i])
      except ValueError:
        continue  # empty: not evaluated
    if values:
      out.append(Point(t.run_id[i], -1, True, float(t.params[i]), float(t.tokens[i]),
                       float(t.flops[i]), bool(held[i]), values))
  return out


def tasks_of(points: list[Point]) -> list[str]:
  """Tasks with all three answer metrics somewhere in `points`, in first-seen order."""
  seen = dict.fromkeys(k.split("/")[0] for p in points for k in p.values)
  return [t for t in seen if all(any(f"{t}/{m}" in p.values for p in points) for m in METRICS)]


def span(log_c, y, higher_is_better: bool = True, noise: float = 0.0) -> dict:
  """The compute span of a metric's rise (module doc), in decades.

  Args:
    log_c: log10 C of the points, ascending.
    y: the metric at each point.
    higher_is_better: False for losses (their rise is a fall).
    noise: the standard error of the rise (first point against last); a rise under
      `NOISE_SE` of them is no rise (one problem of 256 solved by chance would otherwise get a
      span).

  Returns:
    `{c10, c90, span, rise}` (log10 FLOPs where 10% and 90% of the rise is made, their
    difference, and the rise itself; NaN where the metric does not measurably improve).
  """
  x, y = np.asarray(log_c, np.float64), np.asarray(y, np.float64)
  rise = (y[-1] - y[0]) * (1.0 if higher_is_better else -1.0)
  if len(x) < 2 or not rise > NOISE_SE * noise:
    return {"c10": math.nan, "c90": math.nan, "span": math.nan, "rise": float(rise)}
  g = np.maximum.accumulate((y - y[0]) / (y[-1] - y[0]))  # progress, its monotone envelope
  cross = []
  for level in LEVELS:
    i = int(np.argmax(g >= level))  # g[0] = 0 < level, g[-1] >= 1: a crossing exists
    frac = (level - g[i - 1]) / (g[i] - g[i - 1])
    cross.append(float(x[i - 1] + frac * (x[i] - x[i - 1])))
  return {"c10": cross[0], "c90": cross[1], "span": cross[1] - cross[0], "rise": float(rise)}


def answer_tokens(points: list[Point], task: str) -> int:
  """k of a task: `answer_tokens` in the language's metadata, else from its name and config."""
  from scaling.train.record import read_result

  for p in points:
    r = read_result(p.folder) if p.folder is not None else None
    bayes = (((r.data or {}).get("tasks") or {}).get("bayes") or {}) if r else {}
    if task in bayes:
      return int(bayes[task]["answer_tokens"])
    if r is not None and task == "recall":
      return int(((r.config or {}).get("data") or {}).get("synthetic", {})["body_length"])
  if task.startswith("addition") and task.removeprefix("addition").isdigit():
    return int(task.removeprefix("addition")) + 1
  raise ScalingError(f"task {task!r}: its answer length is unknown (a results table does not "
                     "carry it); pass the ladder workdir")


def analyse(points: list[Point], task: str, which: str = "final") -> dict:
  """The emergence report of one task (module doc): the curve, each metric's span, the
  sharpness ratio and the p^k prediction of exact match.

  `which`: `final` (each run's last checkpoint) or `all` (every checkpoint).
  """
  keys = [f"{task}/{m}" for m in METRICS]
  pts = [p for p in points if (p.final or which == "all") and all(k in p.values for k in keys)]
  pts.sort(key=lambda p: (p.flops, p.params))
  if len(pts) < 3:
    raise ScalingError(f"task {task!r}: {len(pts)} evaluated checkpoints with all of "
                       f"{', '.join(METRICS)}; emergence needs 3 or more compute points "
                       "(more rungs, or --points=all with `scaling eval --checkpoints=all`)")
  log_c = np.log10([p.flops for p in pts])
  y = {m: np.array([p.values[f"{task}/{m}"] for p in pts]) for m in METRICS}
  spans = {m: span(log_c, y[m], higher_is_better=m != "nll", noise=math.hypot(
      _standard_error(pts[0], f"{task}/{m}"), _standard_error(pts[-1], f"{task}/{m}")))
      for m in METRICS}
  k = answer_tokens(points, task)
  pk = y["token_accuracy"] ** k
  ratio = spans["nll"]["span"] / spans["exact_match"]["span"]
  return {
      "task": task, "points": which, "answer_tokens": k,
      "curve": [{"run_id": p.run_id, "step": p.step, "params": p.params, "tokens": p.tokens,
                 "flops": p.flops, **{m: float(y[m][i]) for m in METRICS},
                 "p_to_the_k": float(pk[i])} for i, p in enumerate(pts)],
      "span": spans,
      "max_step_share": {m: sharpness(log_c, -y[m] if m == "nll" else y[m]) for m in METRICS},
      "sharpness_ratio": float(ratio) if np.isfinite(ratio) else None,
      "token_accuracy_ratio": _ratio(spans["token_accuracy"], spans["exact_match"]),
      "p_to_the_k": {"mean_abs_error": float(np.mean(np.abs(y["exact_match"] - pk))),
                     "mean_measured_over_predicted": float(
                         np.mean(y["exact_match"]) / max(np.mean(pk), 1e-300))},
  }


def _standard_error(p: Point, key: str) -> float:
  """Binomial standard error of a fraction (accuracy, exact match) over its n; 0 for a loss or
  an unknown n. With the value at 0 or 1 it is taken at one success in n, not 0."""
  n = p.counts.get(key, 0)
  if key.endswith("/nll") or n <= 0:
    return 0.0
  v = min(max(p.values[key], 1.0 / n), 1.0 - 1.0 / n)
  return math.sqrt(v * (1.0 - v) / n)


def _ratio(a: dict, b: dict) -> float | None:
  r = a["span"] / b["span"]
  return float(r) if np.isfinite(r) else None


def _bayes(points: list[Point], task: str) -> dict:
  """The language's exact scores of `task` (Bayes-optimal; context-blind for recall)."""
  from scaling.train.record import read_result

  for p in points:
    if p.folder is None:
      continue
    r = read_result(p.folder)
    meta = ((r.data or {}).get("tasks") or {}) if r else {}
    if task in (meta.get("bayes") or {}):
      out = {"bayes": meta["bayes"][task]}
      if task == "recall" and meta.get("recall_context_blind"):
        out["context_blind"] = meta["recall_context_blind"]
      return out
  return {}


def run_fit(args):
  """`scaling fit PATH --law=emergence [--task=T] [--points=final|all]` -> a `Fit`."""
  from scaling.fit.base import Fit

  points = load_points(args.table, strict=getattr(args, "strict", False))
  tasks = [t.strip() for t in (args.task or "").split(",") if t.strip()] or tasks_of(points)
  if not tasks:
    raise ScalingError(f"{args.table}: no task has {', '.join(METRICS)} in its evals; "
                       "evaluate a synthetic language with data.synthetic.tasks (or "
                       "`scaling eval --tasks=recall`)")
  which = getattr(args, "points", None) or "final"
  reports = {t: dict(analyse(points, t, which), **_bayes(points, t)) for t in tasks}
  derived = {}
  for t, rep in reports.items():
    for m in METRICS:
      derived[f"{t}.span_{m}"] = rep["span"][m]["span"]
    derived[f"{t}.sharpness_ratio"] = rep["sharpness_ratio"]
    derived[f"{t}.p_to_the_k_mean_abs_error"] = rep["p_to_the_k"]["mean_abs_error"]
  first = reports[tasks[0]]
  fit = Fit("emergence", None, "interpolation", {}, derived, len(first["curve"]),
            info={"formula": "span = log10 C(90% of the rise) - log10 C(10%); "
                             "sharpness_ratio = span(nll) / span(exact_match)",
                  "source": "Schaeffer et al. 2023, arXiv:2304.15004, Sec. 2 (exact match "
                            "~ p^k)", "table": args.table, "tasks": reports})
  fit.checks = _checks(reports)
  fit.provenance = _provenance(args, fit, points)
  return fit


def _checks(reports: dict) -> list[dict]:
  out = []
  for t, rep in reports.items():
    bad = [m for m in METRICS if not np.isfinite(rep["span"][m]["span"])]
    out.append({"name": f"rises:{t}", "ok": not bad,
                "detail": (f"every metric of {t} improves from the smallest to the largest "
                           "compute" if not bad else
                           f"{t}: no rise of {', '.join(bad)} across the ladder beyond "
                           f"{NOISE_SE:g} standard errors, so no span; train larger rungs or "
                           "longer, or score more problems (--examples)")})
  return out


def _provenance(args, fit, points: list[Point]) -> dict:
  """The fit's provenance (`scaling.fit.provenance.build`), its runs those with evals."""
  from scaling.fit import provenance
  from scaling.fit.table import Table

  final = {}
  for p in points:
    if p.final:
      final.setdefault(p.run_id, p)
  rows = list(final.values())
  key = f"{next(iter(fit.info['tasks']))}/nll"
  loss = np.array([max(p.values.get(key, 1.0), 1e-12) for p in rows])
  table = Table(np.array([p.params for p in rows]), np.array([p.tokens for p in rows]), loss,
                {"flops": np.array([p.flops for p in rows])}, [p.run_id for p in rows],
                {"_dir": [p.folder for p in rows]} if all(p.folder for p in rows) else {},
                args.table)
  return provenance.build(table_path=args.table, fitted=table, argv=getattr(args, "argv", None),
                          law=fit.law, approach=None, method=fit.method,
                          seed=getattr(args, "seed", 0), bootstrap=0)


# ------------------------------------------------------------------ report and figure


def markdown(fit, pngs: list[str], out_dir: str) -> str:
  """report.md of an emergence fit: per task, the curve and the spans."""
  lines = ["# Emergence on the same checkpoints: exact match against NLL and per-token accuracy",
           "", f"- Input: `{fit.info.get('table')}`; {fit.info['formula']}",
           f"- Source: {fit.info['source']}", ""]
  for t, rep in fit.info["tasks"].items():
    sp = rep["span"]
    lines += [f"## Task `{t}` ({rep['answer_tokens']}-token answers, {rep['points']} "
              "checkpoints)", "",
              "| metric | 10% at log10 C | 90% at log10 C | span (decades) | share of the rise "
              "in one step |", "| --- | --- | --- | --- | --- |"]
    for m in METRICS:
      lines.append(f"| {m} | {sp[m]['c10']:.3f} | {sp[m]['c90']:.3f} | {sp[m]['span']:.3f} | "
                   f"{rep['max_step_share'][m]:.2f} |")
    ratio = rep["sharpness_ratio"]
    lines += ["", "Sharpness ratio span(nll) / span(exact_match) = "
              + ("undefined" if ratio is None else f"**{ratio:.2f}**")
              + (" (exact match rises over fewer decades than the likelihood: it looks "
                 "emergent)" if ratio and ratio > 1 else ""), "",
              f"p^k with k = {rep['answer_tokens']}: mean |exact match - p^k| = "
              f"{rep['p_to_the_k']['mean_abs_error']:.3g}; measured / predicted = "
              f"{rep['p_to_the_k']['mean_measured_over_predicted']:.3g}.", ""]
    if rep.get("bayes"):
      b = rep["bayes"]
      lines.append(f"Bayes-optimal (the generating process, exact): nll {b['nll']:.4f}, "
                   f"token accuracy {b['token_accuracy']:.3f}, exact match "
                   f"{b['exact_match']:.3f}." + (
                       f" Context-blind: nll {rep['context_blind']['nll']:.4f}, token accuracy "
                       f"{rep['context_blind']['token_accuracy']:.3f}, exact match "
                       f"{rep['context_blind']['exact_match']:.3f}."
                       if rep.get("context_blind") else ""))
      lines.append("")
    lines += ["| run | step | C (FLOPs) | N | nll | token acc. | exact match | p^k |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in rep["curve"]:
      lines.append(f"| `{c['run_id']}` | {c['step']} | {c['flops']:.3g} | {c['params']:.3g} | "
                   f"{c['nll']:.4f} | {c['token_accuracy']:.3f} | {c['exact_match']:.3f} | "
                   f"{c['p_to_the_k']:.3f} |")
    lines.append("")
  for p in pngs:
    if p.endswith(".png"):
      lines += [f"![{os.path.basename(p)}]({os.path.relpath(p, out_dir)})", ""]
  return "\n".join(lines) + "\n"


def plot(fit, stem: str) -> list[str]:
  """One row per task: NLL, per-token accuracy, exact match (with p^k) against compute, the
  10%-90% span of each shaded."""
  from scaling.fit.plots import COLUMN, _plt, _save

  plt = _plt()
  reports = fit.info["tasks"]
  fig, axes = plt.subplots(len(reports), 3, figsize=(COLUMN[0] * 2, COLUMN[1] * 0.9 *
                                                     len(reports)), squeeze=False)
  for row, (t, rep) in zip(axes, reports.items(), strict=True):
    c = np.array([x["flops"] for x in rep["curve"]])
    for ax, m in zip(row, METRICS, strict=True):
      ax.plot(c, [x[m] for x in rep["curve"]], "o-", ms=2.5, color="k", label="measured")
      sp = rep["span"][m]
      if np.isfinite(sp["span"]):
        ax.axvspan(10 ** sp["c10"], 10 ** sp["c90"], color="0.9", lw=0,
                   label=f"10-90% of the rise: {sp['span']:.2f} dec.")
      if rep.get("bayes"):
        ax.axhline(rep["bayes"][m], color="C2", ls="--", lw=0.8, label="Bayes-optimal")
      ax.set_xscale("log")
      ax.set_xlabel("training compute C (FLOPs)")
      ax.set_ylabel({"nll": "answer NLL (nats/token)", "token_accuracy": "per-token accuracy",
                     "exact_match": "exact match"}[m])
      ax.set_title(f"{t}: {m}")
      ax.legend(frameon=False, fontsize=5)
    row[2].plot(c, [x["p_to_the_k"] for x in rep["curve"]], ":", color="C0",
                label=f"p^{rep['answer_tokens']}")
    row[2].legend(frameon=False, fontsize=5)
  return _save(fig, stem)


def write_outputs(fit, out_dir: str, plot_fn=None, markdown_fn=None) -> list[str]:
  """fit.json, report.md and the figure of a task fit in `out_dir`; `plot_fn` and
  `markdown_fn` (default this module's) draw and write a fit of another task law
  (`scaling.fit.two_stage`)."""
  from scaling import storage
  from scaling.fit import provenance

  os.makedirs(out_dir, exist_ok=True)
  pngs = (plot_fn or plot)(fit, os.path.join(out_dir, "plots", fit.law))
  path = os.path.join(out_dir, "fit.json")
  provenance.write_fit_json(path, fit.to_json(include_samples=True))
  storage.write_text(os.path.join(out_dir, "report.md"),
                     (markdown_fn or markdown)(fit, pngs, out_dir))
  return [path, os.path.join(out_dir, "report.md")] + pngs
