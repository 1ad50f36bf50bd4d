"""Two-stage task prediction: (N, D) -> task loss -> task accuracy (Bhagia et al. 2024,
"Establishing Task Scaling Laws via Compute-Efficient Model Ladders", arXiv:2412.04403).

`scaling fit LADDER --law=two_stage --task=T [--metric=exact_match] [--bootstrap=K]` reads the
runs' `evals.jsonl` (`scaling eval`) and fits

* stage 1, the task loss (the answer's per-token NLL, `T/nll`) at each run's final checkpoint
  as a Chinchilla law of size and data, L(N, D) = E + A / N^alpha + B / D^beta (their Eq. 1;
  fitted as every law here, `scaling.fit.core`), or with `--x=params|tokens|flops` the power
  law E + A X^-alpha for ladders too small for five parameters;
* stage 2, the task score as a sigmoid of the task loss, Acc(L) = a / (1 + exp(-k (L - L0))) + b
  (their Eq. 2), by least squares on every evaluated checkpoint of the fitted runs (intermediate
  checkpoints fill in the loss range; the map from loss to score does not depend on N or D);
* the chain Acc(L(N, D)), with percentile intervals from a bootstrap that resamples runs (with
  replacement) and refits both stages on each replicate, a run's checkpoints carrying its
  weight into stage 2.

Held-out rungs (marked by the ladder, or `--holdout-above=C`) are predicted: `fit.json`
`validation` lists each one's observed and predicted task loss and score, the interval, and the
score predicted from its observed loss (stage 2 alone), so the two stages' errors can be told
apart. The noise floor is the spread a prediction cannot beat: the standard deviation of each
run's score over its last `--noise-checkpoints` evaluated checkpoints (cf. Bhagia et al. 2024,
who measure the variance of task scores over a run's final checkpoints).
"""

from __future__ import annotations

import math

import numpy as np

from scaling.errors import ScalingError
from scaling.fit.emergence import Point, load_points

LAW = "two_stage"
SIGMOID = ("sigmoid_a", "sigmoid_k", "sigmoid_L0", "sigmoid_b")
LEVEL = 0.95


def sigmoid(loss, a, k, l0, b):
  """Acc(L) = a / (1 + exp(-k (L - L0))) + b (Bhagia et al. 2024, Eq. 2); k < 0 when the score
  falls as the loss rises."""
  z = np.clip(-k * (np.asarray(loss, np.float64) - l0), -700.0, 700.0)
  return a / (1.0 + np.exp(z)) + b


def fit_sigmoid(loss, score, weights=None, starts=None) -> np.ndarray:
  """Least-squares (a, k, L0, b) of `sigmoid` to scores at task losses, weighted; the best of a
  few starts (or of `starts`, rows of (a, k, L0, b))."""
  from scipy.optimize import least_squares

  x, y = np.asarray(loss, np.float64), np.asarray(score, np.float64)
  w = np.sqrt(np.ones_like(x) if weights is None else np.asarray(weights, np.float64))
  lo, hi = float(x.min()), float(x.max())
  r = max(hi - lo, 1e-6)
  if starts is None:
    amp = float(np.clip(y.max() - y.min(), 0.05, 1.0))
    starts = [(amp, k / r, lo + f * r, float(max(y.min(), 0.0)))
              for f in (0.25, 0.5, 0.75) for k in (-4.0, -12.0)]
  # Scores are fractions: a (the rise) and b (the floor, chance) lie in [0, 1].
  bounds = ([0.0, -1e4 / r, lo - 3 * r, 0.0], [1.0, 1e4 / r, hi + 3 * r, 1.0])
  best, cost = None, math.inf
  for s in starts:
    s = np.clip(np.asarray(s, np.float64), np.array(bounds[0]) + 1e-9,
                np.array(bounds[1]) - 1e-9)
    out = least_squares(lambda t: w * (sigmoid(x, *t) - y), s, bounds=bounds, method="trf")
    if out.cost < cost:
      best, cost = out.x, out.cost
  return np.asarray(best)


def _stage1_predict(law: str, natural: dict, n, d, x: str | None):
  """Stage 1's task loss at (N, D), numpy, for every replicate row of `natural`."""
  with np.errstate(over="ignore"):  # a replicate at a huge exponent: inf, dropped later
    return _stage1_law(law, natural, n, d, x)


def _stage1_law(law: str, natural: dict, n, d, x: str | None):
  if law == "chinchilla":
    return (natural["E"][..., None] + natural["A"][..., None] / np.power(n, natural["alpha"][
        ..., None]) + natural["B"][..., None] / np.power(d, natural["beta"][..., None]))
  v = {"params": n, "tokens": d, "flops": 6.0 * n * d}[x]
  return natural["E"][..., None] + natural["A"][..., None] * np.power(v, -natural["alpha"][
      ..., None])


def _final(points: list[Point], keys: list[str]) -> list[Point]:
  out = {}
  for p in points:
    if p.final and all(k in p.values for k in keys):
      out.setdefault(p.run_id, p)
  return sorted(out.values(), key=lambda p: (p.flops, p.params))


def noise_floor(points: list[Point], key: str, k: int) -> dict:
  """The standard deviation (ddof 1) of `key` over each run's last `k` evaluated checkpoints,
  per run and its mean: the scatter a prediction of the run's final score cannot beat."""
  per = {}
  for rid in dict.fromkeys(p.run_id for p in points):
    vals = [p.values[key] for p in sorted(points, key=lambda p: p.step)
            if p.run_id == rid and key in p.values][-k:]
    if len(vals) >= 2:
      per[rid] = float(np.std(vals, ddof=1))
  return {"checkpoints": int(k), "per_run": per,
          "mean_std": float(np.mean(list(per.values()))) if per else None,
          "mean_variance": float(np.mean(np.square(list(per.values())))) if per else None}


def _split(final: list[Point], holdout_above: float | None):
  held = [p.holdout or (holdout_above is not None and p.flops > holdout_above) for p in final]
  fitted = [p for p, h in zip(final, held, strict=True) if not h]
  return fitted, [p for p, h in zip(final, held, strict=True) if h]


def chain(points: list[Point], task: str, metric: str = "exact_match", *, x: str | None = None,
          bootstrap: int = 200, seed: int = 0, holdout_above: float | None = None,
          source: str = "<points>") -> dict:
  """Fits both stages and predicts the held-out runs (module doc).

  Returns:
    dict: `stage1` (law, natural params, the `Fit`), `stage2` (a, k, L0, b), `samples`
    (bootstrap replicates of every parameter), `validation` entries, the runs fitted.
  """
  from scaling.fit import core
  from scaling.fit.base import resample_counts
  from scaling.fit.table import Table

  loss_key, score_key = f"{task}/nll", f"{task}/{metric}"
  final = _final(points, [loss_key, score_key])
  fitted, held = _split(final, holdout_above)
  law = "chinchilla" if x is None else "power"
  need = 6 if law == "chinchilla" else 4
  if len(fitted) < need:
    raise ScalingError(f"{source}: {len(fitted)} fitted runs with {loss_key} and {score_key} at "
                       f"their final checkpoint; stage 1 ({law}) needs {need} or more (or "
                       "--x=flops for the 3-parameter power law)")
  table = Table(np.array([p.params for p in fitted]), np.array([p.tokens for p in fitted]),
                np.array([max(p.values[loss_key], 1e-12) for p in fitted]),
                {"flops": np.array([p.flops for p in fitted])}, [p.run_id for p in fitted],
                {}, source)
  fit1, state = core.fit_grid(table, law, x=x)
  index = {p.run_id: i for i, p in enumerate(fitted)}
  pts2 = [p for p in points if p.run_id in index and loss_key in p.values
          and score_key in p.values]
  run_of = np.array([index[p.run_id] for p in pts2])
  l2 = np.array([p.values[loss_key] for p in pts2])
  s2 = np.array([p.values[score_key] for p in pts2])
  theta2 = fit_sigmoid(l2, s2)
  samples: dict[str, np.ndarray] = {}
  if bootstrap:
    # The same run resamples as stage 1's bootstrap (`core.bootstrap_grid`, `resample_counts`
    # with its seed), so each replicate refits both stages on one resample of runs.
    core.bootstrap_grid(table, fit1, state, bootstrap, seed)
    counts = resample_counts(len(fitted), bootstrap, seed)
    rep2 = np.stack([fit_sigmoid(l2, s2, counts[b][run_of] + 1e-12, starts=[theta2])
                     for b in range(bootstrap)])
    samples = {**fit1.samples, **dict(zip(SIGMOID, rep2.T, strict=True))}
  natural = {k: np.asarray([v]) for k, v in fit1.params.items()}
  validation = _validate(held, loss_key, score_key, law, x, natural, theta2, samples)
  return {"law": law, "fit1": fit1, "stage2": dict(zip(SIGMOID, map(float, theta2),
                                                         strict=True)),
          "samples": samples, "validation": validation, "fitted": fitted, "held": held,
          "stage2_points": len(pts2), "stage2_loss_range": [float(l2.min()), float(l2.max())],
          "stage2_data": [[float(a), float(b)] for a, b in zip(l2, s2, strict=True)]}


def _validate(held: list[Point], loss_key: str, score_key: str, law: str, x, natural: dict,
              theta2: np.ndarray, samples: dict) -> list[dict]:
  if not held:
    return []
  n = np.array([p.params for p in held])
  d = np.array([p.tokens for p in held])
  loss_hat = _stage1_predict(law, natural, n, d, x)[0]
  acc_hat = sigmoid(loss_hat, *theta2)
  iv = loss_iv = None
  if samples:
    names = ("E", "A", "B", "alpha", "beta") if law == "chinchilla" else ("E", "A", "alpha")
    nat = {k: np.asarray(samples[k], np.float64) for k in names}
    reps = _stage1_predict(law, nat, n, d, x)  # [B, held]
    acc_reps = sigmoid(reps, *(np.asarray(samples[k])[:, None] for k in SIGMOID))
    ok = np.isfinite(acc_reps).all(axis=1)
    q = 50 * (1 - LEVEL), 50 * (1 + LEVEL)
    iv = np.percentile(acc_reps[ok], q, axis=0) if ok.any() else None
    loss_iv = np.percentile(reps[ok], q, axis=0) if ok.any() else None
  out = []
  for j, p in enumerate(held):
    obs, pred = p.values[score_key], float(acc_hat[j])
    lo_hi = None if iv is None else [float(iv[0][j]), float(iv[1][j])]
    out.append({"run_id": p.run_id, "params": p.params, "tokens": p.tokens, "flops": p.flops,
                "loss": p.values[loss_key], "predicted_loss": float(loss_hat[j]),
                "loss_interval": None if iv is None else [float(loss_iv[0][j]),
                                                          float(loss_iv[1][j])],
                "score": obs, "predicted": pred, "interval": lo_hi,
                "abs_error": pred - obs,
                "stage2_only": float(sigmoid(p.values[loss_key], *theta2)),
                "inside": None if lo_hi is None else bool(lo_hi[0] <= obs <= lo_hi[1])})
  return out


def run_fit(args):
  """`scaling fit PATH --law=two_stage --task=T ...` -> a `Fit` (law `two_stage`)."""
  from scaling.fit import emergence, provenance
  from scaling.fit.base import Fit
  from scaling.fit.table import Table

  points = load_points(args.table, strict=getattr(args, "strict", False))
  tasks = emergence.tasks_of(points)
  task = args.task or ("recall" if "recall" in tasks else (tasks[0] if tasks else None))
  if task is None or "," in task:
    raise ScalingError("--law=two_stage needs one --task (e.g. --task=recall); tasks with "
                       f"answer metrics here: {', '.join(tasks) or 'none'}")
  metric = getattr(args, "metric", None) or "exact_match"
  if metric not in ("exact_match", "token_accuracy"):
    raise ScalingError(f"--metric={metric!r}: stage 2 predicts exact_match or token_accuracy")
  out = chain(points, task, metric, x=args.x, bootstrap=args.bootstrap, seed=args.seed,
              holdout_above=args.holdout_above, source=args.table)
  fit1 = out["fit1"]
  params = {**fit1.params, **out["stage2"]}
  noise = noise_floor(points, f"{task}/{metric}", int(getattr(args, "noise_checkpoints", 4)))
  val = out["validation"]
  derived = {"stage2_points": out["stage2_points"], "noise_std": noise["mean_std"]}
  if val:
    derived["validation_mean_abs_error"] = float(np.mean([abs(e["abs_error"]) for e in val]))
  fit = Fit(LAW, None, "grid+least_squares", params, derived, len(out["fitted"]),
            samples=out["samples"], info={
                "formula": f"{task}/{metric} = a / (1 + exp(-k (L - L0))) + b, L = "
                           + fit1.info["formula"].split("=", 1)[-1].strip(),
                "source": "Bhagia et al. 2024, arXiv:2412.04403, Eqs. 1-2",
                "task": task, "metric": metric, "stage1_law": out["law"], "x": args.x,
                "table": args.table, "noise_floor": noise,
                "stage2_loss_range": out["stage2_loss_range"], "stage2_data": out["stage2_data"],
                "bootstrap": {"samples": int(args.bootstrap), "seed": int(args.seed),
                              "resampling": "runs, with replacement (both stages)"}})
  fit.validation = val
  fit.checks = _checks(fit, noise)
  held = out["held"]

  def table_of(pts):
    return Table(np.array([p.params for p in pts]), np.array([p.tokens for p in pts]),
                 np.array([max(p.values[f"{task}/nll"], 1e-12) for p in pts]),
                 {"flops": np.array([p.flops for p in pts])}, [p.run_id for p in pts],
                 {"_dir": [p.folder for p in pts]} if all(p.folder for p in pts) else {},
                 args.table)

  fit.provenance = provenance.build(
      table_path=args.table, fitted=table_of(out["fitted"]),
      held=table_of(held) if held else None, argv=getattr(args, "argv", None), law=LAW,
      approach=None, method=fit.method, seed=args.seed, bootstrap=args.bootstrap,
      holdout_above=args.holdout_above)
  return fit


def _checks(fit, noise: dict) -> list[dict]:
  out = []
  lo, hi = fit.info["stage2_loss_range"]
  outside = [e["run_id"] for e in fit.validation if not lo <= e["predicted_loss"] <= hi]
  out.append({"name": "stage2_range", "ok": not outside,
              "detail": "every held-out run's predicted task loss lies inside the losses "
                        "stage 2 was fitted on" if not outside else
                        f"{len(outside)} held-out run(s) ({', '.join(outside[:3])}) are "
                        f"predicted a task loss outside [{lo:.4g}, {hi:.4g}], where the "
                        "sigmoid is extrapolated; evaluate more checkpoints of the larger "
                        "rungs (--checkpoints=all)"})
  err = fit.derived.get("validation_mean_abs_error")
  floor = noise.get("mean_std")
  if err is not None and floor is not None:
    out.append({"name": "noise_floor", "ok": True,
                "detail": f"mean |predicted - observed| {err:.3g} against a checkpoint-to-"
                          f"checkpoint standard deviation of {floor:.3g} over the last "
                          f"{noise['checkpoints']} checkpoints"})
  return out


def markdown(fit, pngs: list[str], out_dir: str) -> str:
  """report.md of a two-stage fit: both stages, held-out runs, the noise floor."""
  import os

  from scaling.fit.report import _checks, _fmt, _provenance, _row

  iv = fit.intervals()
  info = fit.info
  lines = [f"# Two-stage task prediction: {info['task']}/{info['metric']}", "",
           f"- Law: `{info['formula']}` ({info['source']})",
           f"- Stage 1: {info['stage1_law']} on {fit.n_points} runs' final task loss; stage 2: "
           f"{int(fit.derived['stage2_points'])} checkpoints, task loss "
           f"[{info['stage2_loss_range'][0]:.4g}, {info['stage2_loss_range'][1]:.4g}]",
           f"- Uncertainty: {info['bootstrap']['samples']} bootstrap resamples "
           f"({info['bootstrap']['resampling']}), 95% percentile intervals"]
  lines += _checks(fit.checks)
  lines += ["", "## Parameters", "", "| parameter | estimate | interval |", "| --- | --- | --- |"]
  lines += [_row(k, v, iv.get(k)) for k, v in fit.params.items()]
  lines += ["", "## Held-out runs: predicted against observed", ""]
  if not fit.validation:
    lines.append("No run is held out (mark rungs `holdout` in the ladder, or pass "
                 "--holdout-above=C).")
  else:
    lines += ["| run | N | D | task loss | predicted | score | predicted | 95% interval | "
              "from observed loss | inside |", "| --- | --- | --- | --- | --- | --- | --- | "
              "--- | --- | --- |"]
    for e in fit.validation:
      i = e["interval"]
      lines.append(f"| `{e['run_id']}` | {_fmt(e['params'])} | {_fmt(e['tokens'])} | "
                   f"{e['loss']:.4f} | {e['predicted_loss']:.4f} | {e['score']:.3f} | "
                   f"{e['predicted']:.3f} | " + ("—" if not i else f"[{i[0]:.3f}, {i[1]:.3f}]")
                   + f" | {e['stage2_only']:.3f} | "
                   + {True: "yes", False: "**no**", None: "—"}[e["inside"]] + " |")
    lines += ["", f"Mean |predicted - observed| score: "
              f"{fit.derived['validation_mean_abs_error']:.3g}."]
  nf = info["noise_floor"]
  lines += ["", "## Noise floor", "",
            f"Standard deviation of each run's score over its last {nf['checkpoints']} "
            "evaluated checkpoints: mean "
            + ("—" if nf["mean_std"] is None else f"{nf['mean_std']:.3g}") + f" over "
            f"{len(nf['per_run'])} runs (runs with fewer than 2 evaluated checkpoints are "
            "left out)."]
  for p in pngs:
    if p.endswith(".png"):
      lines += ["", f"![{os.path.basename(p)}]({os.path.relpath(p, out_dir)})"]
  lines += _provenance(fit.provenance)
  return "\n".join(lines) + "\n"


def plot(fit, stem: str) -> list[str]:
  """Stage 2 (score against task loss, the sigmoid) and the held-out predictions."""
  from scaling.fit.plots import COLUMN, HELD, _plt, _save

  plt = _plt()
  fig, ax = plt.subplots(figsize=COLUMN)
  lo, hi = fit.info["stage2_loss_range"]
  grid = np.linspace(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), 200)
  theta = [fit.params[k] for k in SIGMOID]
  data = np.asarray(fit.info["stage2_data"])
  ax.scatter(data[:, 0], data[:, 1], s=5, color="0.5", label="fitted runs' checkpoints")
  ax.plot(grid, sigmoid(grid, *theta), color="k", lw=0.9, label="stage 2 sigmoid")
  for e in fit.validation:
    ax.scatter([e["loss"]], [e["score"]], s=14, **HELD)
    ax.errorbar([e["predicted_loss"]], [e["predicted"]], yerr=None if not e["interval"] else
                [[e["predicted"] - e["interval"][0]], [e["interval"][1] - e["predicted"]]],
                fmt="x", color="C3", ms=4, lw=0.8)
  if fit.validation:
    ax.plot([], [], "x", color="C3", label="predicted (chain, 95% interval)")
    ax.scatter([], [], s=14, label="held-out, observed", **HELD)
  ax.set_xlabel(f"task loss {fit.info['task']}/nll (nats/token)")
  ax.set_ylabel(f"{fit.info['task']}/{fit.info['metric']}")
  ax.legend(frameon=False)
  return _save(fig, stem)
