"""A Markdown report of a fit: where it came from, its self-checks, parameters with intervals,
derived quantities, held-out runs predicted against observed, and the figures."""

from __future__ import annotations

import os

from scaling.fit.core import Fit

# What each figure of `plots.for_fit` shows, printed under it.
CAPTIONS = {
    "isoflops": "IsoFLOP profiles: final loss against N at each budget, a parabola in log N "
                "per profile and its minimum (hollow star: at the profile's edge, so the "
                "optimum there is extrapolated); dashed, the fitted law along each profile.",
    "frontier": "Loss against compute C = kND with the fitted compute-optimal frontier and its "
                "bootstrap band; grey: beyond the fitted runs (extrapolation); hollow red: "
                "held-out runs; dotted: fitted E; dashed green: the data's known floor.",
    "predicted_vs_actual": "Held-out runs: predicted against observed loss with 95% prediction "
                           "intervals; the line is y = x, the band ±2%.",
    "eval_curves": "Every run's eval loss against compute spent, coloured by N; dashed: "
                   "held-out runs.",
    "residuals": "Log residuals of the fit against N and against D (a trend means the law's "
                 "form misses something); hollow red: held-out runs, out of sample.",
    "optimal_allocation": "N_opt(C) and D_opt(C) of the fit with its bootstrap band, against "
                          "published laws (drawn only over the compute they were fitted on); "
                          "grey: beyond the fitted runs (extrapolation).",
    "moe_experts": "Loss against the number of experts at fixed active parameters, with the "
                   "fitted MoE law.",
}


def _fmt(v) -> str:
  if v is None:
    return "—"
  if isinstance(v, str):
    return v
  v = float(v)
  return f"{v:.4g}" if 1e-3 <= abs(v) < 1e5 or v == 0 else f"{v:.3e}"


def _row(name: str, value, lo_hi) -> str:
  interval = "[" + ", ".join(_fmt(x) for x in lo_hi) + "]" if lo_hi else "—"
  return f"| {name} | {_fmt(value)} | {interval} |"


def _header(fit: Fit) -> list[str]:
  lines = [f"# Scaling-law fit: {fit.law}" + (f", approach {fit.approach}" if fit.approach else ""),
           "", f"- Law: `{fit.info.get('formula', fit.law)}` ({fit.info.get('source', '')})",
           f"- Method: {fit.method}; points: {fit.n_points}; table: `{fit.info.get('table', '')}`"]
  for note in fit.info.get("preparation", []):
    lines.append(f"- Preparation: {note}")
  boot = fit.info.get("bootstrap")
  ci = int(round(fit.ci * 100))
  if boot:
    lines.append(f"- Uncertainty: {boot['samples']} bootstrap resamples ({boot['resampling']}), "
                 f"{ci}% percentile intervals")
  else:
    lines.append("- Uncertainty: none (run with --bootstrap=K for intervals)")
  g = fit.goodness
  if g:
    lines.append(f"- Goodness of fit (log loss, {g.get('n')} runs): R² = {_fmt(g.get('r2'))}, "
                 f"RMSE = {_fmt(g.get('rmse_log'))}, residual scatter s = "
                 f"{_fmt(g.get('s_log'))} on {g.get('dof')} degrees of freedom")
  return lines


def _provenance(prov: dict) -> list[str]:
  if not prov:
    return []
  from scaling.fit import provenance

  inp, sw, cmd = prov.get("input", {}), prov.get("software", {}), prov.get("command", {})
  lines = ["", "## Provenance", "", f"- {provenance.summary({'provenance': prov})}",
           f"- Input: {inp.get('kind')} `{inp.get('path')}`, SHA-256 `{inp.get('sha256')}`"
           + (f" ({inp.get('sha256_of')}; {len(inp.get('files', []))} files hashed)"
              if inp.get("kind") == "workdir" else ""),
           f"- Command: `{cmd.get('command')}` in `{cmd.get('cwd')}` at {cmd.get('time_utc')}",
           f"- Code: scaling {sw.get('version')}, commit `{sw.get('git_commit')}`"
           + (" with uncommitted changes" if sw.get("git_dirty") else "")]
  for d in prov.get("data", []):
    floor = d.get("entropy_floor")
    lines.append(f"- Data: {d.get('name') or 'unknown'} ({d.get('runs')} runs)"
                 + (f", known entropy floor {floor:.4g} nats/token" if floor is not None else ""))
  for d in prov.get("dropped", []):
    where = f"row {d['row']}" if d.get("row") else "record"
    lines.append(f"- Dropped {where} (run `{d.get('run_id')}`): {d.get('reason')}")
  return lines


def _checks(checks: list[dict]) -> list[str]:
  if not checks:
    return []
  failed = sum(1 for c in checks if not c.get("ok"))
  lines = ["", "## Checks", "",
           f"{len(checks) - failed} of {len(checks)} passed." + (" Failed checks say what to "
                                                                "fix." if failed else ""), ""]
  for c in checks:
    lines.append(f"- {'ok' if c.get('ok') else '**WARNING**'} `{c.get('name')}`: "
                 f"{c.get('detail', '')}")
  return lines


def _validation(fit: Fit) -> list[str]:
  rows = fit.validation
  if not rows:
    note = fit.info.get("validation_note")
    return ["", "## Held-out runs", "", note] if note else []
  ci = int(round(fit.ci * 100))
  lines = ["", "## Held-out runs: predicted against observed", "",
           "Trained like the others, left out of the fit, then predicted. The interval is a "
           f"{ci}% prediction interval for a new run (law uncertainty plus the scatter of runs "
           "around it).", "",
           "| run | N | D | C (FLOPs) | observed | predicted | interval | rel. error | inside |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for e in rows:
    iv = e.get("interval")
    rel = e.get("rel_error")
    inside = {True: "yes", False: "**no**", None: "—"}[e.get("inside")]
    lines.append(f"| `{e['run_id']}` | {_fmt(e['params'])} | {_fmt(e['tokens'])} | "
                 f"{_fmt(e['flops'])} | {e['loss']:.4f} | "
                 + ("—" if e.get("predicted") is None else f"{e['predicted']:.4f}") + " | "
                 + ("—" if not iv else f"[{iv[0]:.4f}, {iv[1]:.4f}]") + " | "
                 + ("—" if rel is None else f"{rel:+.2%}") + f" | {inside} |")
  scored = [e for e in rows if e.get("rel_error") is not None]
  if scored:
    mean = sum(abs(e["rel_error"]) for e in scored) / len(scored)
    worst = max(abs(e["rel_error"]) for e in scored)
    inside = sum(1 for e in scored if e.get("inside"))
    lines += ["", f"Mean |relative error| {mean:.2%}, max {worst:.2%}; {inside} of {len(scored)} "
              f"observed losses inside their {ci}% interval."]
  return lines


def markdown(fit: Fit, plots: list[str] | None = None, out_dir: str | None = None) -> str:
  """The report as a Markdown string; `plots` are PNG paths (made relative to `out_dir`)."""
  iv = fit.intervals()
  lines = _header(fit) + _checks(fit.checks)
  lines += ["", "## Parameters", "", "| parameter | estimate | interval |", "| --- | --- | --- |"]
  for k, v in fit.params.items():
    lines.append(_row(k, v, iv.get(k)))
  if fit.derived:
    lines += ["", "| derived | estimate | interval |", "| --- | --- | --- |"]
    for k, v in fit.derived.items():
      lines.append(_row(k, v, iv.get(k)))
    if "predict_flops" in fit.derived:
      lines.append("")
      lines.append(f"`params_opt`, `tokens_opt`, `loss_opt` are at C = "
                   f"{_fmt(fit.derived['predict_flops'])} FLOPs.")
  lines += _validation(fit)
  ex = fit.info.get("extrapolation")
  if ex:
    lines += ["", "## Extrapolation check", "",
              f"Fitted on the {ex['n_train']} runs with C <= {_fmt(ex['threshold_flops'])} FLOPs, "
              f"predicted the {ex['n_test']} above: mean |relative error| "
              f"{ex['mean_abs_rel_error']:.2%}, max {ex['max_abs_rel_error']:.2%}, "
              f"RMSE of log loss {ex['rmse_log']:.4f}."]
  if plots:
    lines += ["", "## Figures", ""]
    for p in plots:
      rel = os.path.relpath(p, out_dir) if out_dir else p
      name = os.path.splitext(os.path.basename(p))[0]
      lines += [f"![{os.path.basename(p)}]({rel})", ""]
      if name in CAPTIONS:
        lines += [f"*{CAPTIONS[name]}*", ""]
  lines += _provenance(fit.provenance)
  return "\n".join(lines) + "\n"
