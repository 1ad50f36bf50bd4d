"""Data-constrained allocation: what repeated epochs are worth when unique tokens run out.

Muennighoff et al. 2023, 'Scaling data-constrained language models' (arXiv:2305.16264):

- Eq. 5, effective data: D' = U_D + U_D R*_D (1 - exp(-R_D / R*_D)), with U_D = min(U, D) the
  unique tokens used and R_D = D / U_D - 1 the repetitions (epochs - 1);
- Eq. 6, effective parameters: N' = U_N + U_N R*_N (1 - exp(-R_N / R*_N)), with U_N =
  min(N, N_opt(U_D)) the compute-optimal size for one epoch of U_D (Sec. 3: parameters beyond
  it are "excess" and decay in value faster) and R_N = N / U_N - 1;
- the loss is the Chinchilla form on them, L = E + A / N'^alpha + B / D'^beta (Sec. 3.1);
- App. A: R*_D = 15.387756 and R*_N = 5.309743 (fitted with their own E, A, B, alpha, beta,
  `MUENNIGHOFF_BASE`; with another law's constants the decay rates are an assumption).

Four epochs (R_D = 3) give D' = 3.73 U against 4 U fresh tokens, 93% of their value; forty give
15.2 U, 38% (Sec. 6: "up to 4 epochs ... negligible changes to loss").

Units: parameters, tokens, FLOPs (C = k N D), loss in the law's nats/token.
"""

from __future__ import annotations

import math

import numpy as np

from scaling.errors import ScalingError
from scaling.fit import laws as laws_lib

R_D_STAR = 15.387756  # Muennighoff et al. 2023, App. A
R_N_STAR = 5.309743  # Muennighoff et al. 2023, App. A
# Their single-epoch law (App. A, Eq. 17; alpha tied to beta), the one the R* above were fitted
# with: exp(6.255414) = 520, exp(7.3049974) = 1488, exp(0.6254804) = 1.87.
MUENNIGHOFF_BASE = {"E": math.exp(0.6254804), "A": math.exp(6.255414),
                    "B": math.exp(7.3049974), "alpha": 0.3526596, "beta": 0.3526596}
SOURCE = ("Muennighoff et al. 2023 (arXiv:2305.16264), Eq. 5-6, R*_D = 15.39, R*_N = 5.31 "
          "(App. A)")
# Epoch counts of the penalty table: each of the first few, then the long tail.
EPOCHS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 40, 64)


def effective_tokens(tokens, unique, r_star: float = R_D_STAR):
  """D' of Eq. 5 for `tokens` trained tokens drawn from `unique` unique ones (broadcasts)."""
  d, u = np.asarray(tokens, np.float64), np.asarray(unique, np.float64)
  u_d = np.minimum(u, d)
  r_d = np.maximum(d / u_d - 1.0, 0.0)
  return u_d + u_d * r_star * (1.0 - np.exp(-r_d / r_star))


def unique_params(p: dict, unique) -> np.ndarray:
  """U_N of Sec. 3: the Chinchilla-optimal N whose D_opt is `unique` (Hoffmann et al. 2022,
  Eq. 4 inverted: D_opt = G^-1 (C/k)^b, so C/k = (U G)^(1/b) and N = G (U G)^(a/b) with
  a/b = beta/alpha; k cancels)."""
  g = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1.0 / (p["alpha"] + p["beta"]))
  return g * (np.asarray(unique, np.float64) * g) ** (p["beta"] / p["alpha"])


def effective_params(p: dict, params, tokens, unique, r_star: float = R_N_STAR):
  """N' of Eq. 6 for `params` parameters trained on min(`unique`, `tokens`) unique tokens."""
  n = np.asarray(params, np.float64)
  u_n = np.minimum(n, unique_params(p, np.minimum(unique, tokens)))
  r_n = np.maximum(n / u_n - 1.0, 0.0)
  return u_n + u_n * r_star * (1.0 - np.exp(-r_n / r_star))


def loss(p: dict, params, tokens, unique):
  """L(N', D') = E + A / N'^alpha + B / D'^beta (Muennighoff et al. 2023, Sec. 3.1)."""
  n_eff = effective_params(p, params, tokens, unique)
  d_eff = effective_tokens(tokens, unique)
  return p["E"] + p["A"] / n_eff ** p["alpha"] + p["B"] / d_eff ** p["beta"]


def _row(p: dict, n: float, d: float, unique: float) -> dict:
  d_eff = float(effective_tokens(d, unique))
  # The same law with every token unique (U = D): the penalty is what repetition alone costs.
  fresh = float(loss(p, n, d, d))
  rep = float(loss(p, n, d, unique))
  return {"params": float(n), "tokens": float(d), "epochs": float(d / unique),
          "effective_tokens": d_eff, "effective_params": float(effective_params(p, n, d, unique)),
          "value_of_data": d_eff / float(d), "loss": rep, "loss_fresh": fresh,
          "penalty": rep - fresh}


def _best(p: dict, flops: float, unique: float, n_opt: float, k: float) -> tuple[float, float]:
  """argmin over N of L(N', D') with D = C / (k N): a log grid, refined three times."""
  grid = np.geomspace(n_opt * 1e-4, n_opt * 1e2, 2001)
  for _ in range(4):
    values = loss(p, grid, flops / (k * grid), unique)
    i = int(np.argmin(values))
    grid = np.geomspace(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)], 201)
  n = float(grid[int(np.argmin(loss(p, grid, flops / (k * grid), unique)))])
  return n, flops / (k * n)


def plan(p: dict, flops: float, unique: float, *, k: float = 6.0,
         given: tuple[float, float] | None = None) -> dict:
  """The data-constrained plan at `flops` with `unique` unique tokens, on the Chinchilla-form
  law `p` (E, A, B, alpha, beta).

  Returns `chinchilla` (the unconstrained optimum, scored with repeats), `best` (the (N, D)
  minimising L(N', D') at the same C, and its epochs), `epochs` (one row per count in `EPOCHS`:
  D = epochs x U, N = C / (k D), the loss with repeats, with fresh data, and the penalty), and
  `given` for the run (N, D) in `given`. Every row has `value_of_data` = D' / D.

  Raises:
    ScalingError: when `unique` is not fewer than the tokens planned (nothing repeats).
  """
  if not unique > 0:
    raise ScalingError(f"--unique-tokens={unique} must be positive")
  o = laws_lib.chinchilla_optimal(p["E"], p["A"], p["B"], p["alpha"], p["beta"], flops, k)
  n_opt, d_opt = float(o["params"]), float(o["tokens"])
  d_planned = given[1] if given else d_opt
  if unique >= d_planned:
    what = (f"--tokens={d_planned:.4g}" if given else
            f"D_opt = {d_planned:.4g} tokens, the compute-optimal data at {flops:.3g} FLOPs")
    raise ScalingError(f"--unique-tokens={unique:.4g} is not fewer than {what}: no token "
                       "repeats, so the plan is the unconstrained one; drop --unique-tokens, "
                       "or give fewer unique tokens than D")
  n_best, d_best = _best(p, flops, unique, n_opt, k)
  out = {"unique_tokens": unique, "R_D_star": R_D_STAR, "R_N_star": R_N_STAR,
         "chinchilla": _row(p, n_opt, d_opt, unique), "best": _row(p, n_best, d_best, unique),
         "epochs": [_row(p, flops / (k * e * unique), e * unique, unique) for e in EPOCHS],
         "source": SOURCE}
  if given:
    out["given"] = _row(p, given[0], given[1], unique)
  return out
