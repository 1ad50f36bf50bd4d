"""Figures a paper would show, as PNG and PDF, sized for one column (3.4 in wide).

Each function takes a table and/or fit and a path stem, writes `stem.png` and `stem.pdf`, and
returns the two paths. Axes are labelled with units; size and compute axes are logarithmic.
"""

from __future__ import annotations

import os

import numpy as np

from scaling.fit import laws as laws_lib
from scaling.fit import published
from scaling.fit.core import Fit
from scaling.fit.table import Table

COLUMN = (3.4, 2.6)


def _plt():
  import matplotlib

  matplotlib.use("Agg")  # no display on CI or clusters
  import matplotlib.pyplot as plt

  plt.rcParams.update({"font.size": 7, "axes.titlesize": 7, "legend.fontsize": 6,
                       "axes.labelsize": 7, "xtick.labelsize": 6, "ytick.labelsize": 6,
                       "lines.linewidth": 1.0, "savefig.dpi": 200})
  return plt


def _save(fig, stem: str) -> list[str]:
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  fig.tight_layout()
  paths = []
  for ext in ("png", "pdf"):
    fig.savefig(f"{stem}.{ext}", bbox_inches="tight")
    paths.append(f"{stem}.{ext}")
  import matplotlib.pyplot as plt
  plt.close(fig)
  return paths


def isoflops(table: Table, fit: Fit, stem: str) -> list[str]:
  """IsoFLOP profiles (loss against N per budget) with the parabola fits and their minima."""
  plt = _plt()
  from scaling.fit.chinchilla import group_budgets

  budgets = group_budgets(table)
  uniq = np.unique(budgets)
  cmap = plt.get_cmap("viridis")
  fig, ax = plt.subplots(figsize=COLUMN)
  minima = {m["budget"]: m for m in fit.info.get("minima", [])}
  for j, c in enumerate(uniq):
    color = cmap(j / max(1, len(uniq) - 1))
    idx = budgets == c
    n, loss = table.params[idx], table.loss[idx]
    ax.scatter(n, loss, s=6, color=color, label=f"{c:.0e}")
    if c in minima and np.isfinite(minima[c]["params"]):
      x = np.log(n)
      p = np.polyfit(x - x.mean(), loss, 2)
      xs = np.linspace(x.min(), x.max(), 100)
      ax.plot(np.exp(xs), np.polyval(p, xs - x.mean()), color=color, lw=0.8)
      ax.plot(minima[c]["params"], minima[c]["params_loss"], marker="*", color=color, ms=6,
              mec="k", mew=0.4)
  ax.set_xscale("log")
  ax.set_xlabel("parameters N")
  ax.set_ylabel("loss (nats/token)")
  ax.set_title(f"IsoFLOP profiles; minima (*) give a = {fit.params['a']:.3f}")
  ax.legend(title="budget (FLOPs)", ncol=2, frameon=False, title_fontsize=6,
            loc="upper right", handletextpad=0.2, columnspacing=0.6)
  return _save(fig, stem)


def _plain_log_ticks(axis) -> None:
  # Loss spans well under a decade: label it 2.0, 2.5, 3.0 rather than 2x10^0.
  from matplotlib.ticker import FormatStrFormatter, LogLocator
  axis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.0)))
  axis.set_major_formatter(FormatStrFormatter("%.1f"))
  axis.set_minor_formatter(FormatStrFormatter(""))


def _band(samples: np.ndarray, ci: float = 0.95):
  lo, hi = 50 * (1 - ci), 50 * (1 + ci)
  return np.nanpercentile(samples, lo, axis=0), np.nanpercentile(samples, hi, axis=0)


def frontier(table: Table, fit: Fit, stem: str) -> list[str]:
  """Loss against compute, the fitted compute-optimal frontier and its bootstrap band."""
  plt = _plt()
  p, k = fit.params, fit.info.get("flops_per_param_token", 6.0)
  # Points at C = k N D, the convention the frontier is computed in: a ladder's own `flops`
  # (accounting with attention and embeddings) sits far right of 6ND for tiny models.
  c = k * table.params * table.tokens
  cs = np.geomspace(c.min() / 2, fit.derived.get("predict_flops", c.max() * 10) * 2, 200)
  fig, ax = plt.subplots(figsize=COLUMN)
  sc = ax.scatter(c, table.loss, c=np.log10(table.params), s=4, cmap="viridis", lw=0)
  cb = fig.colorbar(sc, ax=ax, pad=0.02)
  cb.set_label("log10 parameters", fontsize=6)
  opt = laws_lib.chinchilla_optimal(p["E"], p["A"], p["B"], p["alpha"], p["beta"], cs, k)
  ax.plot(cs, opt["loss"], color="C3", label=f"fit ({fit.method}) frontier")
  s = fit.samples
  if s and "E" in s:
    so = laws_lib.chinchilla_optimal(s["E"][:, None], s["A"][:, None], s["B"][:, None],
                                     s["alpha"][:, None], s["beta"][:, None], cs[None], k)
    lo, hi = _band(so["loss"], fit.ci)
    ax.fill_between(cs, lo, hi, color="C3", alpha=0.25, lw=0,
                    label=f"{int(fit.ci * 100)}% bootstrap band")
  ax.axhline(p["E"], color="gray", ls=":", lw=0.8, label=f"E = {p['E']:.2f}")
  ax.set_xscale("log")
  ax.set_yscale("log")
  _plain_log_ticks(ax.yaxis)
  ax.set_xlabel(f"training compute C = {k:g}ND (FLOPs)")
  ax.set_ylabel("loss (nats/token)")
  ax.legend(frameon=False, loc="upper right")
  return _save(fig, stem)


def optimal_allocation(fit: Fit, stem: str, flops_range=None,
                       overlay=("hoffmann2022", "besiroglu2024", "kaplan2020_frontier",
                                "ratio20")) -> list[str]:
  """N_opt(C) and D_opt(C) of the fit (with band) and of published laws, two panels."""
  plt = _plt()
  from scaling.fit.plan import LawSource

  lo, hi = flops_range or (1e18, max(1e25, fit.derived.get("predict_flops", 0) * 2))
  cs = np.geomspace(lo, hi, 100)
  fig, axes = plt.subplots(1, 2, figsize=(COLUMN[0] * 2, COLUMN[1]))
  src = LawSource.__new__(LawSource)
  src.fit, src.law, src.name = fit, None, "fit"
  n_fit, d_fit, bands = [], [], []
  for c in cs:
    o = src.optimal(c, fit.info.get("flops_per_param_token", 6.0))
    n_fit.append(o["params"])
    d_fit.append(o["tokens"])
    bands.append(o.get("intervals"))
  for ax, key, vals, label in ((axes[0], "params", n_fit, "N_opt (parameters)"),
                               (axes[1], "tokens", d_fit, "D_opt (tokens)")):
    ax.plot(cs, vals, color="k", lw=1.4, label=f"this fit (approach {fit.approach})")
    if bands[0] is not None:
      ax.fill_between(cs, [b[key][0] for b in bands], [b[key][1] for b in bands], color="k",
                      alpha=0.2, lw=0)
    for j, name in enumerate(overlay):
      law = published.get(name)
      o = law.optimal(cs)
      ax.plot(cs, o[key], ls="--", color=f"C{j}", lw=0.9, label=name)
    for m in fit.info.get("minima", []):
      ax.plot(m["budget"], m[key], "o", color="k", ms=2.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C (FLOPs)")
    ax.set_ylabel(label)
    ax.grid(True, which="major", lw=0.3, alpha=0.5)
  axes[0].legend(frameon=False, loc="upper left")
  return _save(fig, stem)


def residuals(table: Table, fit: Fit, stem: str) -> list[str]:
  """Log residuals log(L_hat / L) of a Chinchilla fit against compute, coloured by N."""
  plt = _plt()
  p = fit.params
  pred = p["E"] + p["A"] / table.params ** p["alpha"] + p["B"] / table.tokens ** p["beta"]
  r = np.log(pred / table.loss)
  fig, ax = plt.subplots(figsize=COLUMN)
  sc = ax.scatter(table.flops, r, c=np.log10(table.params), s=4, cmap="viridis", lw=0)
  cb = fig.colorbar(sc, ax=ax, pad=0.02)
  cb.set_label("log10 parameters", fontsize=6)
  ax.axhline(0, color="k", lw=0.6)
  ax.set_xscale("log")
  ax.set_xlabel("training compute C (FLOPs)")
  ax.set_ylabel("log(predicted / observed loss)")
  ax.set_title(f"residuals, {fit.method} fit: RMS {np.sqrt(np.mean(r * r)):.4f}")
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
