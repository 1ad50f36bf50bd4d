"""`scaling plan --sweep=LO:HI[:POINTS]`: the plan across budgets, as a table and a figure.

Each row is a budget C with N_opt, D_opt and loss (with the fit's bootstrap interval when the
law is a fit.json with samples) and, with hardware, days, cost and CO2 (`scaling.fit.costs`).
A row beyond the compute the law was fitted on is marked extrapolated, and the figure shades
that region on the panels that depend on the law (N, D, loss; the cost panels are the budget
times constants, the same for any law). The fitted range comes from the fit.json's provenance
(`support`, the fitted runs), or for a published law from the runs it was fitted on, as the
tables in scaling/reference_data give them; when it is unknown nothing is shaded and the figure
says so.
"""

from __future__ import annotations

import csv
import io
import math
import os

import numpy as np

from scaling.errors import ScalingError
from scaling.fit import costs

_REF = os.path.join(os.path.dirname(os.path.dirname(__file__)), "reference_data")
# Published laws fitted on Hoffmann et al. 2022's runs, digitised from their Fig. 4 by
# Besiroglu et al. 2024 (scaling/reference_data/epoch_chinchilla_svg_extracted_data.csv).
_HOFFMANN_RUNS = ("hoffmann2022", "besiroglu2024", "hoffmann2022_approach1",
                  "hoffmann2022_approach2")


def parse_sweep(spec: str) -> np.ndarray:
  """Budgets (FLOPs) from `LO:HI[:POINTS]`: POINTS log-spaced budgets from LO to HI (default
  one per decade, ends included)."""
  parts = spec.split(":")
  try:
    if len(parts) not in (2, 3):
      raise ValueError
    lo, hi = float(parts[0]), float(parts[1])
    points = int(parts[2]) if len(parts) == 3 else None
  except ValueError:
    raise ScalingError(f"--sweep={spec!r} must look like LO:HI or LO:HI:POINTS, e.g. "
                       "--sweep=1e18:1e26") from None
  if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
    raise ScalingError(f"--sweep={spec!r}: need 0 < LO < HI FLOPs (finite), e.g. 1e18:1e26")
  if points is None:
    points = max(2, int(round(math.log10(hi / lo))) + 1)
  if not 2 <= points <= 200:
    raise ScalingError(f"--sweep={spec!r}: POINTS={points} must be in 2..200")
  return np.geomspace(lo, hi, points)


def _csv_range(name: str, column: str, keep=lambda row: True) -> tuple[float, float]:
  with open(os.path.join(_REF, name), newline="") as fh:
    values = [float(r[column]) for r in csv.DictReader(fh) if keep(r)]
  return min(values), max(values)


def law_support(src, k: float = 6.0) -> dict | None:
  """`{lo, hi, source}`: the compute (FLOPs) the law's runs spanned, or None if unknown."""
  if src.fit is not None:
    fit = src.fit
    sup = (fit.provenance or {}).get("support") or {}
    if "E" in fit.params and "params_x_tokens" in sup:  # approach 3: frontier in C = k N D
      lo, hi = (k * v for v in sup["params_x_tokens"])
      return {"lo": lo, "hi": hi, "source": f"the fitted runs' {k:g}ND (fit.json provenance)"}
    if "flops" in sup:
      lo, hi = sup["flops"]
      return {"lo": lo, "hi": hi, "source": "the fitted runs' FLOPs (fit.json provenance)"}
    budgets = [m["budget"] for m in fit.info.get("minima", []) if "budget" in m]
    if budgets:
      return {"lo": min(budgets), "hi": max(budgets), "source": "the fit's IsoFLOP budgets"}
    return None
  if src.name in _HOFFMANN_RUNS:
    lo, hi = _csv_range("epoch_chinchilla_svg_extracted_data.csv", "Training FLOP")
    return {"lo": lo, "hi": hi, "source": "Hoffmann et al. 2022 Fig. 4 runs (Besiroglu et al. "
            "2024's digitisation, scaling/reference_data)"}
  if src.name == "cerebras2023":  # fitted on 111M-6.7B (published.py)
    lo, hi = _csv_range("cerebras_gpt_pythia_pile_test_xent.csv", "training_flops_reported",
                        lambda r: r["family"] == "Cerebras-GPT"
                        and float(r["params_total"]) <= 6.7e9)
    return {"lo": lo, "hi": hi, "source": "Cerebras-GPT 111M-6.7B training FLOPs (Dey et al. "
            "2023, scaling/reference_data)"}
  return None


def sweep(src, budgets: np.ndarray, *, k: float = 6.0, hardware_name: str | None = None,
          mfu: float = 0.4, devices: int = 1, price=None, watts=None, pue=None,
          carbon=None) -> dict:
  """One row per budget: `flops`, `params`, `tokens`, `tokens_per_param`, `loss`, `intervals`
  (when sampled), `extrapolated`, and with hardware `device_hours`, `days`, `cost_usd`,
  `energy_mwh`, `co2_t`. Also `support` (see `law_support`) and the cost `assumptions`."""
  if src.moe_law:
    raise ScalingError(f"--sweep plans dense laws; for an MoE fit ({src.moe_law}) plan one "
                       "budget at a time with --flops")
  support = law_support(src, k)
  rows, assumptions = [], None
  for c in budgets:
    opt = src.optimal(float(c), k)
    row = {"flops": float(c), "params": opt["params"], "tokens": opt["tokens"],
           "tokens_per_param": opt["tokens"] / opt["params"], "loss": opt.get("loss"),
           "extrapolated": None if support is None else not (
               support["lo"] <= c <= support["hi"])}
    if opt.get("intervals"):
      row["intervals"] = opt["intervals"]
    if hardware_name:
      cost = costs.run_costs(float(c), hardware_name, mfu=mfu, devices=devices, price=price,
                             watts=watts, pue=pue, carbon=carbon)
      row.update({key: cost[key] for key in ("device_hours", "days", "cost_usd", "energy_mwh",
                                             "co2_t")})
      assumptions = cost["assumptions"]
    rows.append(row)
  out = {"law": src.name, "law_source": src.source, "sweep": rows, "support": support}
  if src.fit is not None:
    out["ci"] = src.fit.ci
  if hardware_name:
    out.update(hardware=hardware_name, devices=devices, mfu=mfu, assumptions=assumptions)
  return out


def _fmt(v, spec: str = ".3g") -> str:
  return "—" if v is None else format(v, spec)


def text(result: dict) -> str:
  """The sweep as a fixed-width table (rows beyond the fitted compute marked `*`)."""
  sup = result["support"]
  lines = [f"law: {result['law']}  ({result['law_source']})"]
  if sup:
    lines.append(f"  fitted on {sup['lo']:.3g} .. {sup['hi']:.3g} FLOPs ({sup['source']}); "
                 "* = extrapolated beyond it")
  else:
    lines.append("  fitted compute range unknown: extrapolation is not marked")
  if "assumptions" in result:
    a = result["assumptions"]
    lines.append(f"  costs on {result['devices']} x {result['hardware']} at MFU "
                 f"{result['mfu']:.3g}: ${_fmt(a['price_usd_per_device_hour']['value'], 'g')}"
                 f"/device-hour, {_fmt(a['watts_per_device']['value'], 'g')} W, PUE "
                 f"{a['pue']['value']:g}, {a['carbon_kg_per_kwh']['value']:g} kg CO2/kWh")
  lines.append(f"    {'C (FLOPs)':>10} {'N_opt':>9} {'D_opt':>9} {'D/N':>6} {'loss':>7} "
               f"{'loss interval':>17} {'days':>9} {'cost $':>9} {'CO2 t':>9}")
  for r in result["sweep"]:
    iv = (r.get("intervals") or {}).get("loss")
    ci = f"[{iv[0]:.4g}, {iv[1]:.4g}]" if iv else "—"
    mark = "*" if r["extrapolated"] else " "
    lines.append(f"  {mark} {r['flops']:>10.3g} {r['params']:>9.3g} {r['tokens']:>9.3g} "
                 f"{r['tokens_per_param']:>6.1f} {_fmt(r['loss'], '.4g'):>7} {ci:>17} "
                 f"{_fmt(r.get('days')):>9} {_fmt(r.get('cost_usd')):>9} "
                 f"{_fmt(r.get('co2_t')):>9}")
  return "\n".join(lines)


def plot(result: dict, path: str) -> str:
  """Writes the sweep figure to `path` (PNG, atomically): N_opt, D_opt and loss against C,
  with bootstrap bands and the extrapolation shaded, and days, cost and CO2 when known."""
  from scaling import storage
  from scaling.fit import plots

  if not path.lower().endswith(".png"):
    raise ScalingError(f"--plot={path} must name a .png file")
  plt = plots._plt()
  from matplotlib import ticker

  rows, sup = result["sweep"], result["support"]
  c = np.array([r["flops"] for r in rows])
  law_panels = [("params", "N_opt (parameters)"), ("tokens", "D_opt (tokens)")]
  if all(r["loss"] is not None for r in rows):
    law_panels.append(("loss", "predicted loss (nats/token)"))
  cost_panels = []
  if "assumptions" in result:
    where = f"{result['devices']} x {result['hardware']}, MFU {result['mfu']:.2g}"
    cost_panels = [(key, label) for key, label in (
        ("days", f"wall-clock days ({where})"), ("cost_usd", "cost (USD)"),
        ("co2_t", "CO2e (tonnes)")) if rows[0].get(key) is not None]
  panels = law_panels + cost_panels
  ncol = 3 if len(panels) > 4 else len(panels) if len(panels) <= 3 else 2
  nrow = math.ceil(len(panels) / ncol)
  fig, axes = plt.subplots(nrow, ncol, figsize=(plots.COLUMN[0] * ncol, plots.COLUMN[1] * nrow),
                           squeeze=False)
  for ax in axes.flat[len(panels):]:
    ax.set_visible(False)
  for i, (ax, (key, label)) in enumerate(zip(list(axes.flat)[:len(panels)], panels,
                                             strict=True)):
    y = np.array([r[key] for r in rows], np.float64)
    if key in dict(law_panels) and sup is not None:
      spans = [(a, b) for a, b in ((c[0], sup["lo"]), (sup["hi"], c[-1])) if b > a]
      for j, (a, b) in enumerate(spans):  # labelled once, in the first panel's legend
        ax.axvspan(a, b, **plots.EXTRAPOLATION, label="extrapolated (beyond the fitted runs)"
                   if i == 0 and j == 0 else None)
    if any(key in (r.get("intervals") or {}) for r in rows):
      band = np.array([r["intervals"][key] for r in rows])
      ax.fill_between(c, band[:, 0], band[:, 1], color="C0", alpha=0.3, lw=0,
                      label=f"{result.get('ci', 0.95):.0%} bootstrap interval" if i == 0
                      else None)
    ax.plot(c, y, "o-", color="C0" if key in dict(law_panels) else "k", ms=2.5, lw=1.0)
    ax.set_xscale("log")
    if key != "loss":
      ax.set_yscale("log")
      ax.yaxis.set_major_locator(ticker.LogLocator(numticks=6))
    # Unlabelled minor ticks: laying out their (empty) labels was most of the drawing time.
    for axis in (ax.xaxis, ax.yaxis):
      axis.set_minor_formatter(ticker.NullFormatter())
    ax.xaxis.set_major_locator(ticker.LogLocator(numticks=6))
    ax.set_xlim(c[0], c[-1])
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel(label)
    ax.grid(True, which="major", lw=0.3, alpha=0.5)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(frameon=False, loc="upper left")
  note = (f"law fitted on {sup['lo']:.2g}-{sup['hi']:.2g} FLOPs ({sup['source']}); grey: "
          "extrapolation" if sup else "fitted compute range unknown: extrapolation not shaded")
  fig.suptitle(f"plan across budgets: {os.path.basename(result['law'])}\n{note}", fontsize=7)
  # Fixed spacing (tight_layout measured every tick label again, doubling the drawing time).
  fig.subplots_adjust(wspace=0.32, hspace=0.38, top=0.86 if nrow == 2 else 0.78)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", bbox_inches="tight")
  plt.close(fig)
  try:
    storage.write_bytes(path, buf.getvalue())
  except OSError as e:
    raise ScalingError(f"--plot={path}: cannot write it ({e.strerror or e})") from None
  return path
