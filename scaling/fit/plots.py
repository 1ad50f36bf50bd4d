"""Figures a paper would show, as PNG and PDF, sized for one column (3.4 in wide).

Each function takes a table and/or fit and a path stem, writes `stem.png` and `stem.pdf`, and
returns the two paths. Axes are labelled with units; size and compute axes are logarithmic.

Rules every figure keeps, so none misleads:
- a curve of the law beyond the compute its runs span is drawn over a grey band labelled
  "extrapolation";
- held-out runs (never fitted) are hollow red markers, distinct from fitted ones;
- a known floor of the data (the synthetic language's entropy) is a labelled horizontal line,
  distinct from the fitted E.
"""

from __future__ import annotations

import os

import numpy as np

from scaling.fit import laws as laws_lib
from scaling.fit import published
from scaling.fit.core import Fit
from scaling.fit.table import Table

COLUMN = (3.4, 2.6)
HELD = dict(marker="o", facecolors="none", edgecolors="C3", linewidths=0.8)
EXTRAPOLATION = dict(color="0.85", alpha=0.6, lw=0, zorder=0)
FLOOR_STYLE = dict(color="C2", ls="--", lw=0.9)
# Published laws are fitted on 1e18..1e24 FLOPs (Hoffmann et al. 2022, Kaplan et al. 2020);
# below that an overlay would be an extrapolation of its own, so it is not drawn there.
PUBLISHED_SUPPORT = (1e18, 1e25)
REL_BAND = 0.02  # the 2% loss error a held-out prediction is judged by (the demo's acceptance bar)


def _plt():
  import matplotlib

  matplotlib.use("Agg")  # no display on CI or clusters
  import matplotlib.pyplot as plt

  plt.rcParams.update({"font.size": 7, "axes.titlesize": 7, "legend.fontsize": 6,
                       "axes.labelsize": 7, "xtick.labelsize": 6, "ytick.labelsize": 6,
                       "lines.linewidth": 1.0, "savefig.dpi": 200})
  return plt


def _save(fig, stem: str, tight: bool = True) -> list[str]:
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  if tight:
    fig.tight_layout()
  paths = []
  for ext in ("png", "pdf"):
    fig.savefig(f"{stem}.{ext}", bbox_inches="tight")
    paths.append(f"{stem}.{ext}")
  import matplotlib.pyplot as plt
  plt.close(fig)
  return paths


def _chinchilla(p: dict, n, d):
  """Hoffmann et al. 2022, Eq. 2: L = E + A / N^alpha + B / D^beta."""
  return p["E"] + p["A"] / np.asarray(n) ** p["alpha"] + p["B"] / np.asarray(d) ** p["beta"]


def _held_arrays(validation: list[dict] | None) -> dict[str, np.ndarray] | None:
  """Held-out runs' columns from `validation` entries, or None when there are none."""
  if not validation:
    return None
  keys = ("params", "tokens", "flops", "loss")
  return {k: np.array([e[k] for e in validation], np.float64) for k in keys}


def _shade_extrapolation(ax, lo: float, hi: float, x_min: float, x_max: float) -> None:
  """Grey bands over [x_min, lo) and (hi, x_max]: where the curves leave the fit's runs."""
  labelled = False
  for a, b in ((x_min, lo), (hi, x_max)):
    if b > a:
      ax.axvspan(a, b, **EXTRAPOLATION,
                 label=None if labelled else "extrapolation (beyond the fitted runs)")
      labelled = True


def _draw_floor(ax, floor: float | None) -> None:
  if floor is not None:
    ax.axhline(floor, **FLOOR_STYLE, label=f"known floor {floor:.3f} (data entropy)")


def _profile_parabola(n: np.ndarray, loss: np.ndarray):
  """Least-squares parabola in log N through one IsoFLOP profile (Hoffmann et al. 2022,
  Sec. 3.2); returns (xs, fitted loss, N at the vertex, loss at the vertex, vertex inside)."""
  x = np.log(n)
  x0 = x.mean()  # centred for conditioning
  p2, p1, p0 = np.polyfit(x - x0, loss, 2)
  xs = np.linspace(x.min(), x.max(), 100)
  if p2 <= 0:  # not U-shaped: no minimum
    return xs, np.polyval((p2, p1, p0), xs - x0), None, None, False
  xm = -p1 / (2 * p2) + x0
  return (xs, np.polyval((p2, p1, p0), xs - x0), float(np.exp(xm)),
          float(p0 - p1 * p1 / (4 * p2)), bool(x.min() <= xm <= x.max()))


MAX_LEGEND_BUDGETS = 8  # more budgets than this get a colorbar instead of legend entries


def _draw_profile(ax, table: Table, idx: np.ndarray, fit: Fit, color) -> str | None:
  """One IsoFLOP profile: its runs, the law along it, its parabola and minimum. Returns
  "edge" when the minimum is at the profile's edge, "inside" when inside, else None."""
  n, loss = table.params[idx], table.loss[idx]
  ax.scatter(n, loss, s=7, color=color, zorder=3)
  if "E" in fit.params and len(np.unique(n)) >= 2:
    # The law along the profile: D follows the runs (log D linear in log N at fixed C).
    slope, icpt = np.polyfit(np.log(n), np.log(table.tokens[idx]), 1)
    ns = np.geomspace(n.min(), n.max(), 60)
    ax.plot(ns, _chinchilla(fit.params, ns, np.exp(icpt + slope * np.log(ns))), color=color,
            ls="--", lw=0.6)
  if len(np.unique(n)) < 3:
    return None
  xs, ys, n_min, l_min, inside = _profile_parabola(n, loss)
  ax.plot(np.exp(xs), ys, color=color, lw=0.8)
  if n_min is None:
    return None
  if inside:
    ax.plot(n_min, l_min, marker="*", color=color, ms=7, mec="k", mew=0.4, ls="none", zorder=4)
    return "inside"
  at = n.min() if n_min < n.min() else n.max()
  ax.plot(at, np.interp(np.log(at), xs, ys), marker="*", mfc="none", mec=color, ms=8,
          ls="none", zorder=4)
  return "edge"


def isoflops(table: Table, fit: Fit, stem: str,
             validation: list[dict] | None = None) -> list[str]:
  """IsoFLOP profiles (loss against N per budget) with their parabolas and minima.

  A minimum inside its profile is a filled star; one at or beyond the profile's edge (the
  parabola's vertex lies outside the sizes run) is a hollow star at the edge, labelled, since
  its position is an extrapolation. An Approach 3 fit adds the law along each profile (dashed);
  held-out runs (`validation`) are hollow red circles. Budgets are legend entries, or a
  colorbar when there are more than `MAX_LEGEND_BUDGETS`.
  """
  plt = _plt()
  from matplotlib.lines import Line2D

  from scaling.fit.chinchilla import group_budgets

  budgets = group_budgets(table)
  uniq = np.unique(budgets[np.isfinite(budgets)])
  cmap, norm = plt.get_cmap("viridis"), _log_norm(uniq)
  many = len(uniq) > MAX_LEGEND_BUDGETS
  fig, ax = plt.subplots(figsize=(COLUMN[0], COLUMN[1] * 1.3) if many else COLUMN)
  kinds = [_draw_profile(ax, table, np.flatnonzero(budgets == c), fit, cmap(norm(c)))
           for c in uniq]
  held = _held_arrays(validation)
  if held is not None:
    ax.scatter(held["params"], held["loss"], s=12, **HELD, zorder=3)
  ax.set_xscale("log")
  ax.set_xlabel("parameters N")
  ax.set_ylabel("final loss (nats/token)")
  title = "IsoFLOP profiles, parabolas in log N and their minima (*)"
  if "a" in fit.params:
    title += f"; a = {fit.params['a']:.3f}"
  ax.set_title(title)
  handles = []
  if not many:
    handles += [Line2D([], [], color=cmap(norm(c)), marker="o", ms=3, ls="none",
                       label=f"{c:.1e} FLOPs") for c in uniq]
  else:
    _colorbar(fig, plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax, "budget (FLOPs)", fmt=_sci)
  handles.append(Line2D([], [], color="0.3", lw=0.8, label="parabola"))
  if "E" in fit.params:
    handles.append(Line2D([], [], color="0.3", ls="--", lw=0.6, label="fitted law"))
  if "edge" in kinds:
    handles.append(Line2D([], [], marker="*", mfc="none", mec="0.3", ms=8, ls="none",
                          label=f"minimum at edge ({kinds.count('edge')})"))
  if held is not None:
    handles.append(Line2D([], [], marker="o", mfc="none", mec="C3", ls="none", ms=4,
                          label="held out (not fitted)"))
  # Outside the axes: inside, the legend sat on the smallest budget's right-hand points. With
  # a colorbar on the right it goes below, or the axes were squeezed to a third of the width.
  if many:
    ax.legend(handles=handles, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.18),
              ncol=2, handletextpad=0.3)
  else:
    ax.legend(handles=handles, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              handletextpad=0.3)
  return _save(fig, stem, tight=not many)


def _plain_log_ticks(axis) -> None:
  # Loss spans well under a decade: label it 2.0, 2.5, 3.0 rather than 2x10^0.
  from matplotlib.ticker import FormatStrFormatter, LogLocator
  axis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.0)))
  axis.set_major_formatter(FormatStrFormatter("%.1f"))
  axis.set_minor_formatter(FormatStrFormatter(""))


def _band(samples: np.ndarray, ci: float = 0.95):
  lo, hi = 50 * (1 - ci), 50 * (1 + ci)
  return np.nanpercentile(samples, lo, axis=0), np.nanpercentile(samples, hi, axis=0)


def frontier(table: Table, fit: Fit, stem: str, floor: float | None = None,
             validation: list[dict] | None = None) -> list[str]:
  """Loss against compute, the fitted compute-optimal frontier with its bootstrap band, the
  fitted E, the data's known floor (when given) and the held-out runs."""
  plt = _plt()
  p, k = fit.params, fit.info.get("flops_per_param_token", 6.0)
  # Points at C = k N D, the convention the frontier is computed in: a ladder's own `flops`
  # (accounting with attention and embeddings) sits far right of 6ND for tiny models.
  c = k * table.params * table.tokens
  held = _held_arrays(validation)
  c_all = c if held is None else np.concatenate([c, k * held["params"] * held["tokens"]])
  c_hi = max(fit.derived.get("predict_flops", c.max() * 10), c_all.max()) * 2
  cs = np.geomspace(c.min(), c_hi, 200)  # the frontier starts at the smallest run
  fig, ax = plt.subplots(figsize=(COLUMN[0], COLUMN[1] * 1.35))
  _shade_extrapolation(ax, c.min(), c.max(), cs[0], cs[-1])
  sc = ax.scatter(c, table.loss, c=table.params, norm=_log_norm(table.params), s=5,
                  cmap="viridis", lw=0, label="fitted runs", zorder=3)
  _colorbar(fig, sc, ax, "parameters N")
  if held is not None:
    ax.scatter(k * held["params"] * held["tokens"], held["loss"], s=14, **HELD,
               label="held out (not fitted)", zorder=4)
  opt = laws_lib.chinchilla_optimal(p["E"], p["A"], p["B"], p["alpha"], p["beta"], cs, k)
  ax.plot(cs, opt["loss"], color="C3", label=f"fit ({fit.method}) frontier")
  s = fit.samples
  if s and "E" in s:
    so = laws_lib.chinchilla_optimal(s["E"][:, None], s["A"][:, None], s["B"][:, None],
                                     s["alpha"][:, None], s["beta"][:, None], cs[None], k)
    lo, hi = _band(so["loss"], fit.ci)
    ax.fill_between(cs, lo, hi, color="C3", alpha=0.25, lw=0,
                    label=f"{int(fit.ci * 100)}% bootstrap band")
  ax.axhline(p["E"], color="gray", ls=":", lw=0.8, label=f"fitted E = {p['E']:.3f}")
  _draw_floor(ax, floor)
  ax.set_xscale("log")
  ax.set_yscale("log")
  _plain_log_ticks(ax.yaxis)
  ax.set_xlim(c.min() / 1.5, cs[-1])
  ax.set_xlabel(f"training compute C = {k:g}ND (FLOPs)")
  ax.set_ylabel("final loss (nats/token)")
  # Below the axes: seven entries inside covered the runs.
  ax.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
  return _save(fig, stem, tight=False)  # tight_layout cannot fit a legend below the axes


def _count(v: float) -> str:
  """2K, 50K, 1.5M, 3B: parameter counts as a reader says them."""
  for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
    if v >= div:
      return f"{v / div:.3g}{suffix}"
  return f"{v:.3g}"


def _sci(v: float) -> str:
  return f"{v:.0e}".replace("e+0", "e").replace("e+", "e")


def _colorbar(fig, mappable, ax, label: str, fmt=_count, pad: float = 0.02):
  """A colorbar for a log-scaled quantity: ticks at 1, 2, 5 x 10^k, labelled by `fmt` (2K, 5K,
  10K; a bar spanning less than a decade got a single 10^4 tick, or crowded 2x10^4 labels)."""
  from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
  cb = fig.colorbar(mappable, ax=ax, pad=pad)
  cb.set_label(label, fontsize=6)
  norm = mappable.norm
  wide = norm.vmax / norm.vmin > 1e3  # over three decades, 1-2-5 ticks crowd: decades only
  cb.ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
  cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
  cb.ax.yaxis.set_minor_formatter(NullFormatter())
  return cb


def _log_norm(values: np.ndarray):
  from matplotlib.colors import LogNorm
  lo, hi = float(np.min(values)), float(np.max(values))
  return LogNorm(lo, hi if hi > lo else lo * 1.01)


def _support(table: Table | None, fit: Fit, k: float) -> tuple[float, float] | None:
  """Compute range (FLOPs, C = k N D) of the runs the fit saw, or None if unknown."""
  if table is not None and len(table):
    # Approach 3's frontier is in C = k N D; approaches 1 and 2 fit the table's own C.
    c = k * table.params * table.tokens if "E" in fit.params else table.flops
    return float(c.min()), float(c.max())
  budgets = [m["budget"] for m in fit.info.get("minima", [])]
  return (min(budgets), max(budgets)) if budgets else None


def _profile_minima(table: Table, k: float) -> list[dict]:
  """Per IsoFLOP budget with 3+ sizes and a minimum inside the profile: the parabola minima
  in N and in D, placed at the profile's mean k N D (the frontier's convention)."""
  from scaling.fit.chinchilla import group_budgets

  budgets = group_budgets(table)
  out = []
  for c in np.unique(budgets[np.isfinite(budgets)]):
    idx = np.flatnonzero(budgets == c)
    if len(np.unique(table.params[idx])) < 3:
      continue
    *_, n_min, _, n_in = _profile_parabola(table.params[idx], table.loss[idx])
    *_, d_min, _, d_in = _profile_parabola(table.tokens[idx], table.loss[idx])
    if n_min is not None and d_min is not None and n_in and d_in:
      c_knd = float(np.exp(np.mean(np.log(k * table.params[idx] * table.tokens[idx]))))
      out.append({"budget": c_knd, "params": n_min, "tokens": d_min})
  return out


def optimal_allocation(fit: Fit, stem: str, flops_range=None,
                       overlay=("hoffmann2022", "besiroglu2024", "kaplan2020_frontier",
                                "ratio20"), table: Table | None = None) -> list[str]:
  """N_opt(C) and D_opt(C) of the fit (with band) and of published laws, two panels.

  The range runs from a third of the fit's smallest compute to twice the prediction budget, not
  to a fixed 1e25: beyond the runs' compute the curves are extrapolations, shaded grey.
  Published laws are drawn only over the compute they were fitted on (`PUBLISHED_SUPPORT`);
  the D = 20 N rule everywhere.
  """
  plt = _plt()
  from scaling.fit.plan import LawSource

  k = fit.info.get("flops_per_param_token", 6.0)
  support = _support(table, fit, k)
  if flops_range is not None:
    lo, hi = flops_range
  elif support is not None:
    lo, hi = support[0] / 3, max(fit.derived.get("predict_flops", 0), support[1] * 10) * 2
  else:
    lo, hi = 1e18, max(1e25, fit.derived.get("predict_flops", 0) * 2)
  cs = np.geomspace(lo, hi, 100)
  fig, axes = plt.subplots(1, 2, figsize=(COLUMN[0] * 2, COLUMN[1]))
  src = LawSource.__new__(LawSource)
  src.fit, src.law, src.name = fit, None, "fit"
  opts = [src.optimal(c, k) for c in cs]
  for ax, key, label in ((axes[0], "params", "N_opt (parameters)"),
                         (axes[1], "tokens", "D_opt (tokens)")):
    if support is not None:
      _shade_extrapolation(ax, support[0], support[1], lo, hi)
    ax.plot(cs, [o[key] for o in opts], color="k", lw=1.4,
            label=f"this fit (approach {fit.approach})")
    if opts[0].get("intervals") is not None:
      ax.fill_between(cs, [o["intervals"][key][0] for o in opts],
                      [o["intervals"][key][1] for o in opts], color="k", alpha=0.2, lw=0,
                      label=f"{int(fit.ci * 100)}% bootstrap band")
    for j, name in enumerate(overlay):
      law = published.get(name)
      pub = cs if law.kind == "ratio" else cs[(cs >= PUBLISHED_SUPPORT[0])
                                             & (cs <= PUBLISHED_SUPPORT[1])]
      if pub.size:
        ax.plot(pub, law.optimal(pub, k)[key], ls="--", color=f"C{j}", lw=0.9, label=name)
    # Profile minima only from a real IsoFLOP design (a `budget` column); see `for_fit`.
    minima = fit.info.get("minima") or (
        _profile_minima(table, k) if table is not None and "E" in fit.params
        and table.get("budget") is not None else [])
    for i, m in enumerate(minima):
      ax.plot(m["budget"], m[key], "o", color="k", ms=2.5,
              label="IsoFLOP minima (data)" if i == 0 else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_xlabel(f"training compute C = {k:g}ND (FLOPs)" if "E" in fit.params
                  else "training compute C (FLOPs, the table's)")
    ax.set_ylabel(label)
    ax.grid(True, which="major", lw=0.3, alpha=0.5)
  # Below both panels: in the left one the legend covered the largest budgets' minima.
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, frameon=False, loc="upper center", bbox_to_anchor=(0.5, 0.0),
             ncol=4)
  fig.tight_layout()
  return _save(fig, stem, tight=False)


def residuals(table: Table, fit: Fit, stem: str,
              validation: list[dict] | None = None) -> list[str]:
  """Log residuals log(L_hat / L) of a Chinchilla fit against N and against D (two panels),
  coloured by compute; held-out runs (out-of-sample residuals) as hollow red circles."""
  plt = _plt()
  p = fit.params
  r = np.log(_chinchilla(p, table.params, table.tokens) / table.loss)
  held = _held_arrays(validation)
  fig, axes = plt.subplots(1, 2, figsize=(COLUMN[0] * 2, COLUMN[1]), sharey=True)
  for ax, col, label in ((axes[0], "params", "parameters N"), (axes[1], "tokens", "tokens D")):
    x = table.params if col == "params" else table.tokens
    sc = ax.scatter(x, r, c=table.flops, norm=_log_norm(table.flops), s=6, cmap="viridis",
                    lw=0, label="fitted runs")
    if held is not None:
      rh = np.log(_chinchilla(p, held["params"], held["tokens"]) / held["loss"])
      ax.scatter(held[col], rh, s=16, **HELD, label="held out")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel(label)
  _colorbar(fig, sc, axes, "compute C (FLOPs)", fmt=_sci, pad=0.01)
  axes[0].set_ylabel("log(predicted / observed loss)")
  axes[0].set_title(f"residuals, {fit.method} fit: RMS {np.sqrt(np.mean(r * r)):.4f} "
                    f"over {len(r)} runs")
  if held is not None:
    axes[1].legend(frameon=False, loc="best")
  return _save(fig, stem, tight=False)  # tight_layout cannot place a colorbar shared by two


def predicted_vs_actual(validation: list[dict], stem: str) -> list[str]:
  """Held-out runs: predicted against observed loss, with prediction-interval error bars and
  the line y = x; each point is labelled with its relative error."""
  plt = _plt()
  rows = [e for e in validation if e.get("predicted") is not None]
  actual = np.array([e["loss"] for e in rows])
  pred = np.array([e["predicted"] for e in rows])
  iv = np.array([e["interval"] if e.get("interval") else [np.nan, np.nan] for e in rows])
  fig, ax = plt.subplots(figsize=(COLUMN[0], COLUMN[0] * 0.9))
  yerr = np.abs(np.stack([pred - iv[:, 0], iv[:, 1] - pred]))
  has_iv = np.isfinite(iv).all(axis=1)
  ax.errorbar(actual[has_iv], pred[has_iv], yerr=yerr[:, has_iv], fmt="o", ms=3, color="C3",
              ecolor="C3", elinewidth=0.8, capsize=2, label="held-out run, 95% pred. interval")
  if (~has_iv).any():
    ax.plot(actual[~has_iv], pred[~has_iv], "o", ms=3, mfc="none", mec="C3",
            label="held-out run (no interval)")
  vals = np.concatenate([actual, pred, iv[np.isfinite(iv)]])
  pad = 0.05 * (vals.max() - vals.min()) + 0.02 * vals.max()
  lim = (vals.min() - pad, vals.max() + pad)
  ax.plot(lim, lim, color="k", lw=0.6, label="y = x (perfect prediction)")
  band = np.linspace(*lim, 2)
  ax.fill_between(band, band * (1 - REL_BAND), band * (1 + REL_BAND), color="0.85", lw=0,
                  label=f"within ±{REL_BAND:.0%} of observed", zorder=0)
  if len(rows) <= 6:  # more labels than this overlap into an unreadable smear
    for a, p_, e in zip(actual, pred, rows, strict=True):
      ax.annotate(f"{e['rel_error']:+.1%}", (a, p_), textcoords="offset points",
                  xytext=(4, -8), fontsize=5)
  ax.set_xlim(lim)
  ax.set_ylim(lim)
  ax.set_aspect("equal")
  ax.set_xlabel("observed final loss (nats/token)")
  ax.set_ylabel("predicted loss (nats/token)")
  inside = sum(1 for e in rows if e.get("inside"))
  mean = float(np.mean([abs(e["rel_error"]) for e in rows]))
  ax.set_title(f"held-out runs: {inside}/{len(rows)} inside their interval, "
               f"mean |error| {mean:.1%}")
  ax.legend(frameon=False, loc="upper left")
  return _save(fig, stem)


def read_eval_curves(workdir: str, held_ids=()) -> list[dict]:
  """Each complete run's eval-loss curve from its `metrics.jsonl` in a ladder workdir.

  Returns dicts `{run_id, params, held, tokens [K], flops [K], eval_loss [K]}` (tokens seen,
  FLOPs spent by the run's accounting, loss in nats/token); `held` for ids in `held_ids`.
  """
  from scaling import storage
  from scaling.ladder import results

  out = []
  for folder, r in results.read_run_records(workdir).records:
    if r.status != "complete":
      continue
    lines = [ln for ln in storage.read_jsonl(folder / "metrics.jsonl")
             if all(ln.get(k) is not None for k in ("eval_loss", "tokens", "flops"))]
    rid = r.run_id or folder.name
    if lines and r.params_non_embedding:
      col = {k: np.array([ln[k] for ln in lines], np.float64)
             for k in ("tokens", "flops", "eval_loss")}
      out.append({"run_id": rid, "params": float(r.params_non_embedding),
                  "held": rid in set(held_ids), **col})
  return out


def eval_curves(curves: list[dict], stem: str, floor: float | None = None) -> list[str]:
  """Every run's eval loss against compute spent, coloured by N (log scale); held-out runs
  dashed. Against compute, the runs of one IsoFLOP budget end together and the lower envelope
  is Approach 1's (Hoffmann et al. 2022, Sec. 3.1)."""
  plt = _plt()
  fig, ax = plt.subplots(figsize=COLUMN)
  norm = _log_norm(np.array([c["params"] for c in curves]))
  cmap = plt.get_cmap("viridis")
  for c in sorted(curves, key=lambda c: c["params"]):
    ax.plot(c["flops"], c["eval_loss"], color=cmap(norm(c["params"])), lw=0.8,
            ls="--" if c["held"] else "-", marker="." if len(c["flops"]) < 6 else None, ms=2)
  if any(c["held"] for c in curves):
    ax.plot([], [], color="0.4", ls="--", lw=0.8, label="held-out run")
  _draw_floor(ax, floor)
  _colorbar(fig, plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax, "parameters N")
  ax.set_xscale("log")
  ax.set_yscale("log")
  _plain_log_ticks(ax.yaxis)
  ax.set_xlabel("training compute spent (FLOPs, the run's accounting)")
  ax.set_ylabel("eval loss (nats/token)")
  ax.set_title(f"eval-loss curves of {len(curves)} runs")
  if ax.get_legend_handles_labels()[0]:
    ax.legend(frameon=False, loc="upper right")
  return _save(fig, stem)


def moe_experts(table: Table, fit: Fit, stem: str) -> list[str]:
  """Loss against number of experts at fixed active parameters, with the fitted law."""
  plt = _plt()
  from scaling.fit.core import design

  n = table.get("params_active") if table.get("params_active") is not None else table.params
  e = table.get("experts")
  groups = np.unique(n)
  fig, ax = plt.subplots(figsize=COLUMN)
  cmap = plt.get_cmap("viridis")
  spec = laws_lib.LAWS[fit.law]
  theta = np.asarray(fit.info["theta"])
  for j, g in enumerate(groups):
    idx = n == g
    color = cmap(j / max(1, len(groups) - 1))
    ax.scatter(e[idx], table.loss[idx], s=8, color=color, label=f"{g:.2g}")
    sub = table.subset(idx)
    order = np.argsort(e[idx])
    d = design(sub.subset(order), fit.law)
    ax.plot(e[idx][order], laws_lib.predict(spec.name, theta, d), color=color, lw=0.8)
  ax.set_xscale("log", base=2)
  ax.set_xlabel("number of experts E")
  ax.set_ylabel("loss (nats/token)")
  ax.set_title(f"{fit.law} law at fixed active parameters")
  ax.legend(title="active params", frameon=False, title_fontsize=6)
  return _save(fig, stem)


def _has_profiles(table: Table) -> bool:
  """Whether some IsoFLOP budget of the table has 3+ model sizes (a parabola to draw)."""
  from scaling.fit.chinchilla import group_budgets

  b = group_budgets(table)
  return any(len(np.unique(table.params[b == c])) >= 3 for c in np.unique(b[np.isfinite(b)]))


def for_fit(fit: Fit, table: Table | None, stem: str) -> list[str]:
  """Every figure that applies to `fit` (fitted on `table`), under the folder `stem`; returns
  the PNG paths in reading order. The eval-loss curves need a ladder workdir as input."""
  from scaling.fit import provenance

  prov = fit.provenance or {}
  floor = provenance.known_floor(prov)
  val = fit.validation
  path = lambda name: os.path.join(stem, name)  # noqa: E731
  pngs = []
  chin = fit.law == "chinchilla"
  # Approach 3 draws profiles only for a table with a `budget` column (an IsoFLOP sweep):
  # budgets clustered from C alone (the Chinchilla Fig. 4 table) make dozens of accidental
  # "profiles" that misread as the design of the experiment.
  if chin and table is not None and (fit.approach == 2 or (
      fit.approach == 3 and table.get("budget") is not None and _has_profiles(table))):
    pngs.append(isoflops(table, fit, path("isoflops"), validation=val)[0])
  if chin and fit.approach == 3 and table is not None:
    pngs.append(frontier(table, fit, path("frontier"), floor=floor, validation=val)[0])
  if any(e.get("predicted") is not None for e in val):
    pngs.append(predicted_vs_actual(val, path("predicted_vs_actual"))[0])
  inp = prov.get("input", {})
  if inp.get("kind") == "workdir":
    held = [r["run_id"] for r in prov.get("runs", []) if r.get("role") == "held_out"]
    curves = read_eval_curves(inp["path"], held)
    if curves:
      pngs.append(eval_curves(curves, path("eval_curves"), floor=floor)[0])
  if chin and fit.approach == 3 and table is not None:
    pngs.append(residuals(table, fit, path("residuals"), validation=val)[0])
  if chin:
    pngs.append(optimal_allocation(fit, path("optimal_allocation"), table=table)[0])
  if fit.law in ("clark", "krajewski") and table is not None:
    pngs.append(moe_experts(table, fit, path("moe_experts"))[0])
  return pngs
