"""The critical batch size from a ladder's logged gradient noise scales, and the batch it proposes.

`scaling fit DIR --law=critical_batch` fits B_crit(L) = B* / L^(1/alpha_B) (Kaplan et al. 2020,
Sec. 5.1, Eq. 5.3), or with `--x=tokens` B_crit(D) = k_D D^e_D (Zhang et al. 2024,
arXiv:2410.21676: the critical batch grows with the data trained on, not with model size), to
the simple noise scale B_simple = tr(Sigma) / |G|^2 that every run trained with
`train.microbatches >= 2` logs at its evaluations (`scaling.train.step.NoiseScale`; McCandlish
et al. 2018 show B_crit ~ B_noise, the batch beyond which a larger batch stops buying steps).

Points: one per evaluation line of each complete run's metrics.jsonl that carries both
`grad_noise_scale` and `eval_loss` (a table file instead: columns `params`, `tokens`, `loss`, the
eval loss at that point, and `grad_noise_scale`, one row per point, `run_id` naming the run).
In the `Table` fitted, `loss` holds B_simple (tokens; the quantity fitted, as
`scaling.fit.hparam_laws` puts each rung's optimum there), `eval_loss` the loss L, `tokens` the
tokens trained when it was measured, `flops` the FLOPs so far.

The fit is `scaling.fit.core`'s grid of L-BFGS starts on the log of B, with the Huber threshold
of the hyperparameter laws (`hparam_laws.HUBER_DELTA`, 0.1: noise-scale estimates scatter by
10-30%). Points of one run are correlated (one trajectory), so the bootstrap resamples runs,
each drawn with all its points (a cluster bootstrap, Davison & Hinkley 1997, Sec. 3.8), through
`core.refit_weighted`; with fewer than `MIN_RUNS` runs it resamples points instead, and says so.
The self-checks that apply run as for every fit (interval bounds, grid edge, residual trends in
N and D: Kaplan et al. find B_crit a function of L alone, so a trend in N is a warning).

`scaling plan ... --critical-batch=FIT.json [--seq-len=S]` proposes the global batch for the
planned run, B_crit at the run's predicted loss (or its D), and the steps D / B that follow.
"""

from __future__ import annotations

import math

import numpy as np

from scaling import storage
from scaling.errors import ScalingError
from scaling.fit import core, predict
from scaling.fit import laws as laws_lib
from scaling.fit import table as table_lib
from scaling.fit.core import Fit
from scaling.fit.hparam_laws import HUBER_DELTA
from scaling.fit.table import Table

LAWS = ("critical_batch",)  # the --law value; --x picks the form
X_LAW = {"loss": "critical_batch", "tokens": "critical_batch_d"}
MIN_RUNS = 3  # fewer runs than this: bootstrap points, not runs
NOISE = "grad_noise_scale"  # the metrics.jsonl / table column (tokens)
SKIPPED_CHECKS = ("budgets", "isoflop_edge", "floor", "leave_one_budget_out", "under_tuned")


def _row(run_id, params, tokens, flops, noise, loss, step, where) -> dict | None:
  vals = (params, tokens, noise, loss)
  if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in vals):
    return None
  return {"run_id": str(run_id), "params": float(params), "tokens": float(tokens),
          "flops": float(flops) if flops else 6.0 * params * tokens, "noise": float(noise),
          "eval_loss": float(loss), "step": step, "_dir": where}


def _workdir_rows(path: str, strict: bool) -> tuple[list[dict], int]:
  records, _ = table_lib._workdir_records(path, strict)
  rows, dropped = [], 0
  for rec in records:
    for line in storage.read_jsonl(rec["_dir"] / "metrics.jsonl"):
      if NOISE not in line and "eval_loss" not in line:
        continue
      r = _row(rec["run_id"], rec["params"], line.get("tokens"), line.get("flops"),
               line.get(NOISE), line.get("eval_loss"), line.get("step"), rec["_dir"])
      dropped += r is None
      if r is not None:
        rows.append(r)
  return rows, dropped


def _file_rows(path: str, columns) -> tuple[list[dict], int]:
  table = table_lib.load_table(path, columns)
  if NOISE not in table.extra:
    raise ScalingError(f"{path}: column {NOISE!r} is required by --law=critical_batch (each "
                       "point's gradient noise scale, tokens); or pass a ladder workdir whose "
                       "runs trained with train.microbatches >= 2")
  rows, dropped = [], 0
  flops = table.flops
  for i in range(len(table)):
    try:
      noise = float(table.extra[NOISE][i])
    except ValueError:
      noise = math.nan
    r = _row(table.run_id[i], table.params[i], table.tokens[i], flops[i], noise,
             table.loss[i], None, None)
    dropped += r is None
    if r is not None:
      rows.append(r)
  return rows, dropped


def points(path: str, columns=None, *, strict: bool = False) -> Table:
  """The noise-scale points of a ladder (or run) workdir or a table file (module doc).

  Raises:
    ScalingError: no point has a positive noise scale and eval loss, naming the fix.
  """
  is_dir = storage.Path(path).is_dir()
  rows, dropped = _workdir_rows(path, strict) if is_dir else _file_rows(path, columns)
  if not rows:
    raise ScalingError(f"{path}: no evaluation has a positive {NOISE!r} and an eval_loss; "
                       "train the runs with train.microbatches >= 2 (the noise scale needs two "
                       "batch sizes; the field does not change a run's id)")
  col = lambda k: np.array([r[k] for r in rows], np.float64)  # noqa: E731
  extra = {"step": [str(r["step"]) for r in rows]}
  if is_dir:
    extra["_dir"] = [r["_dir"] for r in rows]
  notes = [f"{len(rows)} noise-scale points from {len({r['run_id'] for r in rows})} runs"
           + (f"; {dropped} evaluations without a positive estimate left out" if dropped
              else "")]
  return Table(col("params"), col("tokens"), col("noise"),
               {"flops": col("flops"), "eval_loss": col("eval_loss")},
               [r["run_id"] for r in rows], extra, path, notes)


def _run_weights(table: Table, samples: int, seed: int) -> tuple[np.ndarray, str]:
  """Bootstrap weights [samples, rows]: runs drawn with replacement (each with all its points),
  or points when there are fewer than `MIN_RUNS` runs."""
  runs, index = np.unique(np.asarray(table.run_id), return_inverse=True)
  if len(runs) < MIN_RUNS:
    return core.resample_counts(len(table), samples, seed), "points, with replacement"
  rng = np.random.default_rng(seed)
  counts = rng.multinomial(len(runs), np.full(len(runs), 1.0 / len(runs)), size=samples)
  return counts[:, index].astype(np.float64), "runs (each with all its points), with replacement"


def _law(x: str) -> str:
  if x not in X_LAW:
    raise ScalingError(f"--x={x!r}: the critical batch law is in the loss (--x=loss, the "
                       "default) or in the tokens trained (--x=tokens)")
  return X_LAW[x]


def fit_law(table: Table, x: str = "loss", *, bootstrap: int = 0, seed: int = 0) -> Fit:
  """Fits B_crit in `x` ("loss": L, "tokens": D) to a table of noise-scale points (`points`).

  Returns a `Fit` whose params are `B_star`, `alpha_B` (x=loss) or `k_D`, `e_D` (x=tokens),
  with bootstrap samples over runs when `bootstrap` > 0.
  """
  law = _law(x)
  fit, _ = core.fit_grid(table, law, x=x, delta=HUBER_DELTA)
  fit.info.update(runs=len(set(table.run_id)), units="tokens")
  if bootstrap:
    weights, how = _run_weights(table, bootstrap, seed)
    theta = core.refit_weighted(fit, table, weights)
    with np.errstate(all="ignore"):
      fit.samples.update({k: np.asarray(v) for k, v in
                          laws_lib.LAWS[law].natural(theta).items()})
    fit.info["bootstrap"] = {"samples": bootstrap, "seed": seed, "resampling": how}
  predict.summarise(fit, table)
  fit.approach = None
  return fit


def run_fit(args) -> tuple[Fit, Table]:
  """`scaling fit TABLE_OR_DIR --law=critical_batch [--x=loss|tokens]`: points, fit,
  checks and provenance (no held-out validation: every point is fitted)."""
  from scaling.fit import checks, provenance

  if args.resample != "runs" or args.holdout_above is not None or args.drop_highest_loss:
    raise ScalingError("--law=critical_batch resamples runs and holds nothing out; drop "
                       "--resample, --holdout-above and --drop-highest-loss")
  _law(args.x or "loss")  # a bad --x before anything is read
  table = points(args.table, args.columns, strict=getattr(args, "strict", False))
  for f in args.filter:
    col, sep, value = f.partition("=")
    if not sep:
      raise ScalingError(f"--filter {f!r} must look like COL=VALUE")
    table = table.where(**{col: value})
  fit = fit_law(table, args.x or "loss", bootstrap=args.bootstrap, seed=args.seed)
  fit.checks = checks.run_checks(fit, table, skip=SKIPPED_CHECKS)
  fit.checks.append(_runs_check(fit))
  fit.provenance = provenance.build(
      table_path=args.table, fitted=table, columns=args.columns, filters=list(args.filter),
      argv=getattr(args, "argv", None), law=fit.law, approach=None, method=fit.method,
      seed=args.seed, bootstrap=args.bootstrap)
  return fit, table


def _runs_check(fit: Fit) -> dict:
  runs = int(fit.info.get("runs", 0))
  ok = runs >= MIN_RUNS
  detail = f"{fit.n_points} points from {runs} runs"
  if not ok:
    detail += (f": fewer than {MIN_RUNS} runs, so the bootstrap resampled points, which "
               "treats one run's correlated points as independent (intervals too narrow); add "
               "runs of other sizes")
  return {"name": "runs", "ok": ok, "detail": detail}


def predict_batch(fit: Fit, *, loss: float | None = None, tokens: float | None = None
                  ) -> tuple[float, list[float] | None]:
  """B_crit (tokens) at `loss` (x=loss fits) or `tokens` (x=tokens fits), and its bootstrap
  interval when the fit has samples."""
  law = fit.law
  if law == "critical_batch":
    if loss is None or not loss > 0:
      raise ScalingError("a critical_batch fit in the loss needs the planned run's loss; plan "
                         "with a law that predicts one (a published law or an approach-3 "
                         "fit), or refit the batch law with --x=tokens")
    p, s, f = fit.params, fit.samples, lambda b, a: b / loss ** (1.0 / a)  # noqa: E731
    point, keys = f(p["B_star"], p["alpha_B"]), ("B_star", "alpha_B")
  elif law == "critical_batch_d":
    p, s, f = fit.params, fit.samples, lambda k, e: k * tokens ** e  # noqa: E731
    point, keys = f(p["k_D"], p["e_D"]), ("k_D", "e_D")
  else:
    raise ScalingError(f"--critical-batch: a {law} fit is not a critical-batch law; fit one "
                       "with `scaling fit DIR --law=critical_batch --out=DIR`")
  interval = None
  if s and all(k in s for k in keys):
    with np.errstate(all="ignore"):
      reps = np.asarray(f(np.asarray(s[keys[0]]), np.asarray(s[keys[1]])), np.float64)
    reps = reps[np.isfinite(reps)]
    if reps.size:
      lo, hi = np.percentile(reps, [50 * (1 - fit.ci), 50 * (1 + fit.ci)])
      interval = [float(lo), float(hi)]
  return float(point), interval


def plan_batch(fit_path: str, planned: dict, *, seq_len: int) -> dict:
  """The global batch and steps `scaling plan` proposes from a critical-batch fit: B_crit at the
  planned run's loss (or tokens), in tokens and in sequences of `seq_len` (at least 1), and
  steps = D / B. `planned` is `plan.plan`'s output (its `tokens`, `loss`; an MoE plan's `moe`).
  """
  from scaling.fit import provenance

  if seq_len < 1:
    raise ScalingError(f"--seq-len={seq_len} must be a positive number of tokens")
  fit = Fit.from_json(provenance.load_fit_json(fit_path))
  run = planned.get("moe") or planned
  tokens, loss = run.get("tokens"), run.get("loss")
  if not tokens:
    raise ScalingError("--critical-batch needs a plan with a token count D")
  batch, interval = predict_batch(fit, loss=loss, tokens=tokens)
  sequences = max(1, int(round(batch / seq_len)))
  out = {"fit": fit_path, "law": fit.law, "batch_tokens": batch, "seq_len": int(seq_len),
         "batch_sequences": sequences, "steps": int(math.ceil(tokens / (sequences * seq_len))),
         "at": {"loss": loss} if fit.law == "critical_batch" else {"tokens": tokens},
         "source": laws_lib.LAWS[fit.law].source}
  if interval is not None:
    out["batch_tokens_interval"] = interval
  return out


def batch_text(b: dict) -> str:
  """The `scaling plan` line of a proposed batch."""
  iv = b.get("batch_tokens_interval")
  ci = f" [{iv[0]:.3g}, {iv[1]:.3g}]" if iv else ""
  at = ", ".join(f"{k} {v:.4g}" for k, v in b["at"].items())
  return (f"  batch      {b['batch_tokens']:.4g} tokens{ci} = {b['batch_sequences']} x "
          f"{b['seq_len']} (B_crit at {at}); {b['steps']:,} steps")
