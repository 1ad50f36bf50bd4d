"""A short Markdown report of a fit: law, data preparation, parameters with intervals, derived
quantities, extrapolation check and the figures."""

from __future__ import annotations

import os

from scaling.fit.core import Fit


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


def markdown(fit: Fit, plots: list[str] | None = None, out_dir: str | None = None) -> str:
  """The report as a Markdown string; `plots` are PNG paths (made relative to `out_dir`)."""
  iv = fit.intervals()
  ci = int(round(fit.ci * 100))
  lines = [f"# Scaling-law fit: {fit.law}" + (f", approach {fit.approach}" if fit.approach else ""),
           "", f"- Law: `{fit.info.get('formula', fit.law)}` ({fit.info.get('source', '')})",
           f"- Method: {fit.method}; points: {fit.n_points}; table: `{fit.info.get('table', '')}`"]
  for note in fit.info.get("preparation", []):
    lines.append(f"- Preparation: {note}")
  boot = fit.info.get("bootstrap")
  if boot:
    lines.append(f"- Uncertainty: {boot['samples']} bootstrap resamples ({boot['resampling']}), "
                 f"{ci}% percentile intervals")
  else:
    lines.append("- Uncertainty: none (run with --bootstrap=K for intervals)")
  lines += ["", "| parameter | estimate | interval |", "| --- | --- | --- |"]
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
      lines.append(f"![{os.path.basename(p)}]({rel})")
  return "\n".join(lines) + "\n"
