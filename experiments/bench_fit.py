"""Benchmark: Hoffmann's 4,500-start Approach 3 grid, scipy one start after another vs batched JAX.

Prints one JSON object: scipy L-BFGS-B time on the full grid (or on `--scipy_starts=K` starts,
extrapolated linearly to 4,500 and marked as such), the batched JAX time (cold, with
compilation, and warm), their ratio, the best objective each found, and the time of a
1,000-sample bootstrap for the grid method and for variable projection. Data: the Epoch
Chinchilla table prepared as Besiroglu et al. 2024 (240 points).

  .venv/bin/python experiments/bench_fit.py --scipy_starts=450
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--scipy_starts", type=int, default=4500,
                  help="scipy starts to time (evenly spaced over the grid); extrapolated")
  ap.add_argument("--bootstrap", type=int, default=1000)
  args = ap.parse_args()

  from scipy.optimize import minimize
  from scipy.special import logsumexp

  from scaling.fit import chinchilla, laws, optim
  from scaling.fit import table as table_lib

  tab = table_lib.epoch_chinchilla()
  ln, ld, ll = np.log(tab.params), np.log(tab.tokens), np.log(tab.loss)
  grid = laws.HOFFMANN_GRID

  def objective(theta):  # Hoffmann et al. 2022, Eq. 3, in numpy as a scipy user would write it
    a, b, e, alpha, beta = theta
    r = logsumexp([a - alpha * ln, b - beta * ld, np.full_like(ln, e)], axis=0) - ll
    ar = np.abs(r)
    return float(np.sum(np.where(ar <= 1e-3, 0.5 * r * r, 1e-3 * (ar - 0.5e-3))))

  k = min(args.scipy_starts, len(grid))
  pick = np.linspace(0, len(grid) - 1, k).round().astype(int)
  t0 = time.perf_counter()
  best_scipy = min(minimize(objective, grid[i], method="L-BFGS-B").fun for i in pick)
  t_scipy = time.perf_counter() - t0
  t_scipy_full = t_scipy * len(grid) / k

  data = {"logN": ln, "logD": ld, "logL": ll, "w": np.ones_like(ln)}
  fun = laws.objective("chinchilla")
  t0 = time.perf_counter()
  _, f, _ = optim.minimize_batched(fun, grid, data)
  t_cold = time.perf_counter() - t0
  t0 = time.perf_counter()
  _, f, _ = optim.minimize_batched(fun, grid, data)
  t_warm = time.perf_counter() - t0

  t0 = time.perf_counter()
  fit_g = chinchilla.approach3(tab, bootstrap=args.bootstrap)
  t_boot_grid = time.perf_counter() - t0
  t0 = time.perf_counter()
  fit_v = chinchilla.approach3(tab, method="varpro", bootstrap=args.bootstrap)
  t_boot_varpro = time.perf_counter() - t0

  def spread(fit):
    return {k: float(np.std(fit.samples[k])) for k in ("E", "alpha", "beta", "a")}

  print(json.dumps({
      "data": "epoch_chinchilla, 240 points (5 highest-loss dropped)",
      "cpu_count": os.cpu_count(),
      "grid_starts": int(len(grid)),
      "scipy_starts_timed": int(k),
      "scipy_seconds_timed": round(t_scipy, 3),
      "scipy_seconds_full_grid": round(t_scipy_full, 2),
      "scipy_full_grid_is_extrapolated": bool(k < len(grid)),
      "scipy_best_objective": best_scipy,
      "jax_seconds_cold": round(t_cold, 2),
      "jax_seconds_warm": round(t_warm, 2),
      "jax_best_objective": float(np.min(f)),
      "ratio_scipy_over_jax_warm": round(t_scipy_full / t_warm, 1),
      "ratio_scipy_over_jax_cold": round(t_scipy_full / t_cold, 1),
      "bootstrap_samples": args.bootstrap,
      "bootstrap_seconds_grid": round(t_boot_grid, 2),
      "bootstrap_seconds_varpro": round(t_boot_varpro, 2),
      "bootstrap_std_grid": spread(fit_g),
      "bootstrap_std_varpro": spread(fit_v),
      "fit_grid": fit_g.params,
      "fit_varpro": fit_v.params,
  }))


if __name__ == "__main__":
  main()
