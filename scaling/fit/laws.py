"""Scaling-law functional forms, their parameterisations, and Hoffmann-style objectives.

Every law is fitted the way Hoffmann et al. (2022, Sec. 3.3 and App. D.2) fitted theirs:
minimise sum_i Huber_delta(log L_hat(x_i) - log L_i), delta = 1e-3, with L-BFGS from a grid
of initialisations; scale parameters are optimised in log space and sums of terms are
computed with log-sum-exp, so every start is finite and positive by construction.

Units: N = parameters, D = tokens, C = FLOPs, L = loss in nats/token (whatever the table
holds; the laws are unit-agnostic apart from the published constants in `published.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable

import numpy as np

HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, Sec. 3.3 (Eq. 3): delta = 10^-3.


@dataclasses.dataclass(frozen=True)
class LawSpec:
  """A law as the optimiser sees it.

  Attributes:
    name: registry key.
    theta_names: names of the optimisation-space coordinates (log scales, exponents).
    inputs: data keys `log_predict` reads (`logN`, `logD`, `logC`, `logE`, `logG`).
    log_predict: `(theta, data) -> log L_hat`, written with jax.numpy.
    natural: maps `theta` rows `[..., P]` to the published parameters (e.g. `E`, `A`, `alpha`).
    grid: default initialisations `[S, P]`.
    formula: the law in words for reports.
    source: the paper (and equation) the form comes from.
  """
  name: str
  theta_names: tuple[str, ...]
  inputs: tuple[str, ...]
  log_predict: Callable
  natural: Callable[[np.ndarray], dict[str, np.ndarray]]
  grid: np.ndarray
  formula: str
  source: str


def _lse(*terms):
  """log(sum_i exp(t_i)) for the few terms of a law.

  Not max-shifted: in float64 exp is finite for |t| < 709, and clipping there keeps every start
  of the grids finite while saving the max and extra exponentials a stable LSE costs (this sum
  is the innermost loop of every fit). numpy in, numpy out (`evaluate`); JAX inside the fits.
  """
  xp = _array_module(*terms)
  total = 0.0
  for t in terms:
    total = total + xp.exp(xp.clip(t, -700.0, 700.0))
  return xp.log(total)


def _array_module(*arrays):
  """numpy when every input is a numpy array or a Python number, else jax.numpy.

  A law evaluated outside the optimiser (predictions, residuals, intervals) runs in numpy: run
  op by op through JAX, each operation of each new table size is compiled on its own, which
  cost the fit tests ~700 XLA compilations (`experiments/bench_fit_cold.py`).
  """
  if all(isinstance(a, np.ndarray | np.generic | float | int) for a in arrays):
    return np
  import jax.numpy as jnp
  return jnp


def evaluate(name: str, theta: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
  """log L_hat of law `name` in numpy float64: `theta` indexable by parameter (`theta[i]`
  broadcasting against the `data` arrays), `data` the law's design arrays (`design`)."""
  with np.errstate(over="ignore", under="ignore"):
    return np.asarray(LAWS[name].log_predict(
        np.asarray(theta, np.float64), {k: np.asarray(v, np.float64) for k, v in data.items()}),
        np.float64)


def _grid(*axes) -> np.ndarray:
  return np.array(list(itertools.product(*axes)), np.float64)


# --- Chinchilla: L = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, Eq. 2). -------------------
def _chinchilla_log(theta, d):
  a, b, e, alpha, beta = theta[0], theta[1], theta[2], theta[3], theta[4]
  # Hoffmann et al. 2022, Eq. 3: LSE(a - alpha log N, b - beta log D, e) with A=e^a, B=e^b, E=e^e.
  return _lse(a - alpha * d["logN"], b - beta * d["logD"], e)


def _chinchilla_natural(t):
  t = np.asarray(t)
  return {"E": np.exp(t[..., 2]), "A": np.exp(t[..., 0]), "B": np.exp(t[..., 1]),
          "alpha": t[..., 3], "beta": t[..., 4]}


# Hoffmann et al. 2022, App. D.2: alpha, beta in {0, .5, ..., 2}, e in {-1, -.5, ..., 1},
# a, b in {0, 5, ..., 25}; 5 x 5 x 5 x 6 x 6 = 4,500 starts. Stored in theta order (a,b,e,al,be).
HOFFMANN_GRID = _grid(np.arange(0, 30, 5.0), np.arange(0, 30, 5.0), np.arange(-1, 1.5, 0.5),
                      np.arange(0, 2.5, 0.5), np.arange(0, 2.5, 0.5))


# --- Single-variable power law with an irreducible term: L = E + A X^-alpha. --------------------
def _power_log(theta, d):
  a, e, alpha = theta[0], theta[1], theta[2]
  return _lse(a - alpha * d["logX"], e)


def _power_natural(t):
  t = np.asarray(t)
  return {"E": np.exp(t[..., 1]), "A": np.exp(t[..., 0]), "alpha": t[..., 2]}


# --- Kaplan single variable: L = (X_c / X)^alpha (Kaplan et al. 2020, Eqs. 1.1-1.3). -----------
def _kaplan1_log(theta, d):
  log_xc, alpha = theta[0], theta[1]
  return alpha * (log_xc - d["logX"])


def _kaplan1_natural(t):
  t = np.asarray(t)
  return {"X_c": np.exp(t[..., 0]), "alpha": t[..., 1]}


# --- Kaplan joint: L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D (Kaplan et al. 2020, Eq. 1.5).
def _kaplan_nd_log(theta, d):
  log_nc, log_dc, alpha_n, alpha_d = theta[0], theta[1], theta[2], theta[3]
  return alpha_d * _lse((alpha_n / alpha_d) * (log_nc - d["logN"]), log_dc - d["logD"])


def _kaplan_nd_natural(t):
  t = np.asarray(t)
  return {"N_c": np.exp(t[..., 0]), "D_c": np.exp(t[..., 1]), "alpha_N": t[..., 2],
          "alpha_D": t[..., 3]}


# --- Clark et al. 2022 (routed LMs), bilinear law in log N and log E: ----------------------------
# log L = a log N + b log E + c log N log E + d  (Clark et al. 2022, the bilinear law stated in
# their Sec. 1 and fitted in Sec. 4, here without their saturating transform of E).
# Natural logs here; N = dense-equivalent (active)
# parameters, E = number of experts (E = 1 is the dense model).
def _clark_log(theta, d):
  a, b, c, dd = theta[0], theta[1], theta[2], theta[3]
  # Centre log N at 1e8 parameters so the four coordinates are comparably scaled; the natural
  # parameters below undo the shift.
  x = d["logN"] - _CLARK_LOGN0
  return a * x + b * d["logE"] + c * x * d["logE"] + dd


_CLARK_LOGN0 = float(np.log(1e8))


def _clark_natural(t):
  t = np.asarray(t)
  a, b, c, dd = t[..., 0], t[..., 1], t[..., 2], t[..., 3]
  # Un-centre: a x + b e + c x e + d with x = logN - n0.
  return {"a": a, "b": b - c * _CLARK_LOGN0, "c": c, "d": dd - a * _CLARK_LOGN0}


# --- Krajewski et al. 2024 (fine-grained MoE), loss in N, D and granularity G: -------------------
# L = c + (g / G^gamma + a) / N^alpha + b / D^beta  (Krajewski et al. 2024, their joint law in
# N, D and G; equation number not checked offline).
def _krajewski_log(theta, d):
  la, lb, lg, lc, alpha, beta, gamma = (theta[i] for i in range(7))
  return _lse(lg - gamma * d["logG"] - alpha * d["logN"], la - alpha * d["logN"],
              lb - beta * d["logD"], lc)


def _krajewski_natural(t):
  t = np.asarray(t)
  return {"a": np.exp(t[..., 0]), "b": np.exp(t[..., 1]), "g": np.exp(t[..., 2]),
          "c": np.exp(t[..., 3]), "alpha": t[..., 4], "beta": t[..., 5], "gamma": t[..., 6]}


# --- Hyperparameter laws (DeepSeek LLM Eq. 1's power-law form), fitted to sweep optima: -----------
# lr*(N, D) = c N^a D^b (Porian et al. 2024; Bjorck et al. 2024, arXiv:2409.19913, fit the
# optimal learning rate in N and D) and B*(C) = k C^e tokens (DeepSeek-AI 2024, DeepSeek LLM,
# Sec. 3.1, Eq. 1). The "loss" these fit is the optimum (`scaling.fit.hparam_laws.optima`); log N,
# log D and log C are centred at 1e8 parameters, 1e10 tokens and 1e18 FLOPs so the coordinates
# are comparably scaled; the natural parameters undo the shift.
_LR_LOGN0, _LR_LOGD0, _BATCH_LOGC0 = float(np.log(1e8)), float(np.log(1e10)), float(np.log(1e18))


def _lr_log(theta, d):
  return theta[0] + theta[1] * (d["logN"] - _LR_LOGN0) + theta[2] * (d["logD"] - _LR_LOGD0)


def _lr_natural(t):
  t = np.asarray(t)
  with np.errstate(over="ignore"):
    c = np.exp(t[..., 0] - t[..., 1] * _LR_LOGN0 - t[..., 2] * _LR_LOGD0)
  return {"c": c, "a": t[..., 1], "b": t[..., 2]}


def _batch_log(theta, d):
  return theta[0] + theta[1] * (d["logX"] - _BATCH_LOGC0)


def _batch_natural(t):
  t = np.asarray(t)
  with np.errstate(over="ignore"):
    k = np.exp(t[..., 0] - t[..., 1] * _BATCH_LOGC0)
  return {"k": k, "e": t[..., 1]}


HPARAM_LAWS = ("lr", "batch")  # laws of a hyperparameter's optimum, not of the loss


# --- Critical batch size, fitted to logged gradient noise scales (`scaling.fit.critical_batch`):
# B_crit(L) = B* / L^(1/alpha_B) (Kaplan et al. 2020, Sec. 5.1, Eq. 5.3; B_crit ~ B_noise of
# McCandlish et al. 2018), theta = (log B*, 1/alpha_B); and B_crit(D) = k_D D^e_D in the tokens D
# trained so far (Zhang et al. 2024, arXiv:2410.21676, find the critical batch grows with data,
# not model size), log D centred at 1e10 tokens. Batches in tokens; the "loss" these fit is B.
def _critical_batch_log(theta, d):
  return theta[0] - theta[1] * d["logX"]


def _critical_batch_natural(t):
  t = np.asarray(t)
  with np.errstate(divide="ignore", over="ignore"):
    return {"B_star": np.exp(t[..., 0]), "alpha_B": 1.0 / t[..., 1]}


def _critical_batch_d_log(theta, d):
  return theta[0] + theta[1] * (d["logX"] - _LR_LOGD0)


def _critical_batch_d_natural(t):
  t = np.asarray(t)
  with np.errstate(over="ignore"):
    return {"k_D": np.exp(t[..., 0] - t[..., 1] * _LR_LOGD0), "e_D": t[..., 1]}


CRITICAL_BATCH_LAWS = ("critical_batch", "critical_batch_d")  # laws of the noise scale


LAWS: dict[str, LawSpec] = {
    "chinchilla": LawSpec(
        "chinchilla", ("a", "b", "e", "alpha", "beta"), ("logN", "logD"), _chinchilla_log,
        _chinchilla_natural, HOFFMANN_GRID, "L(N, D) = E + A / N^alpha + B / D^beta",
        "Hoffmann et al. 2022, Eq. 2; fitted as in Sec. 3.3 / App. D.2"),
    "power": LawSpec(
        "power", ("a", "e", "alpha"), ("logX",), _power_log, _power_natural,
        _grid(np.arange(0, 30, 2.5), np.arange(-1, 1.5, 0.5),
              [0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0]),
        "L(X) = E + A X^-alpha", "saturating power law, e.g. Hoffmann et al. 2022, Eq. 2 in one "
        "variable; Henighan et al. 2020, Eq. 1.1"),
    "kaplan": LawSpec(
        "kaplan", ("log_X_c", "alpha"), ("logX",), _kaplan1_log, _kaplan1_natural,
        _grid(np.arange(10, 90, 10.0), [0.02, 0.05, 0.1, 0.2, 0.5]),
        "L(X) = (X_c / X)^alpha", "Kaplan et al. 2020, Eqs. 1.1-1.3"),
    "kaplan_nd": LawSpec(
        "kaplan_nd", ("log_N_c", "log_D_c", "alpha_N", "alpha_D"), ("logN", "logD"),
        _kaplan_nd_log, _kaplan_nd_natural,
        _grid(np.arange(20, 45, 5.0), np.arange(20, 45, 5.0), [0.05, 0.1, 0.2, 0.4],
              [0.05, 0.1, 0.2, 0.4]),
        "L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D",
        "Kaplan et al. 2020, Eq. 1.5"),
    "clark": LawSpec(
        "clark", ("a", "b_c", "c", "d_c"), ("logN", "logE"), _clark_log, _clark_natural,
        _grid([-0.2, -0.05], [-0.2, -0.02], [-0.01, 0.0, 0.01], [0.5, 1.0, 1.5]),
        "log L = a log N + b log E + c log N log E + d (natural logs)",
        "Clark et al. 2022, 'Unified scaling laws for routed language models', bilinear law"),
    "krajewski": LawSpec(
        "krajewski", ("log_a", "log_b", "log_g", "log_c", "alpha", "beta", "gamma"),
        ("logN", "logD", "logG"), _krajewski_log, _krajewski_natural,
        _grid([0.0, 5.0, 10.0], [0.0, 5.0, 10.0], [0.0, 5.0], [-1.0, 0.5],
              [0.1, 0.3, 0.6], [0.1, 0.3, 0.6], [0.2, 0.6]),
        "L(N, D, G) = c + (g / G^gamma + a) / N^alpha + b / D^beta",
        "Krajewski et al. 2024, 'Scaling laws for fine-grained mixture of experts'"),
    "lr": LawSpec(
        "lr", ("log_lr_at_1e8_1e10", "a", "b"), ("logN", "logD"), _lr_log, _lr_natural,
        # 64 starts: one stage of `optim.default_schedule`, so one compiled program (the
        # objective is convex in theta; the grid only brackets the optimum for `grid_edge`).
        _grid([-12.0, -8.0, -4.0, 0.0], [-1.5, -0.75, 0.0, 0.75], [-1.5, -0.75, 0.0, 0.75]),
        "lr*(N, D) = c N^a D^b (optimal peak learning rate)",
        "DeepSeek LLM Eq. 1's form in N and D (Porian et al. 2024; Bjorck et al. 2024, "
        "arXiv:2409.19913)"),
    "batch": LawSpec(
        "batch", ("log_B_at_1e18", "e"), ("logX",), _batch_log, _batch_natural,
        _grid([0.0, 5.0, 10.0, 15.0, 20.0], [-0.5, 0.0, 0.5, 1.0]),
        "B*(C) = k C^e (optimal batch, tokens)", "DeepSeek-AI 2024, DeepSeek LLM Sec. 3.1, Eq. 1"),
    "critical_batch": LawSpec(
        "critical_batch", ("log_B_star", "inv_alpha_B"), ("logX",), _critical_batch_log,
        _critical_batch_natural,
        # Kaplan et al. 2020: B* ~ 2e8 tokens (log 19), 1/alpha_B ~ 4.8. The objective is convex
        # in theta (a line in log space); the grid brackets the optimum for `grid_edge`.
        _grid([0.0, 10.0, 20.0, 30.0, 40.0], [0.5, 2.0, 5.0, 10.0, 20.0]),
        "B_crit(L) = B* / L^(1/alpha_B) (critical batch from the noise scale, tokens)",
        "Kaplan et al. 2020, Sec. 5.1, Eq. 5.3; McCandlish et al. 2018 (B_noise)"),
    "critical_batch_d": LawSpec(
        "critical_batch_d", ("log_B_at_1e10", "e_D"), ("logX",), _critical_batch_d_log,
        _critical_batch_d_natural,
        # Small runs sit far below 1e10 tokens, where a steep early-training law extrapolates
        # to a large log B: the grid spans it.
        _grid([0.0, 10.0, 20.0, 30.0, 40.0], [-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5]),
        "B_crit(D) = k_D D^e_D (critical batch from the noise scale, tokens)",
        "Zhang et al. 2024, arXiv:2410.21676 (critical batch grows with D); McCandlish et al. "
        "2018 (B_noise)"),
}


def _log(v):
  # A scale fitted exactly at 0 (variable projection's non-negativity bound) is -inf in log
  # space; `_lse` clips it to exp(-700) = 0, so predictions stay exact.
  with np.errstate(divide="ignore"):
    return np.log(np.asarray(v, np.float64))


def theta_from_natural(name: str, params: dict) -> np.ndarray:
  """Inverse of `LAWS[name].natural`: published parameters (scalars or arrays `[...]`) to
  optimisation-space rows `[..., P]`, so bootstrap samples can be pushed through `log_predict`.
  """
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  if name == "chinchilla":
    cols = [_log(p["A"]), _log(p["B"]), _log(p["E"]), p["alpha"], p["beta"]]
  elif name == "power":
    cols = [_log(p["A"]), _log(p["E"]), p["alpha"]]
  elif name == "kaplan":
    cols = [_log(p["X_c"]), p["alpha"]]
  elif name == "kaplan_nd":
    cols = [_log(p["N_c"]), _log(p["D_c"]), p["alpha_N"], p["alpha_D"]]
  elif name == "clark":
    cols = [p["a"], p["b"] + p["c"] * _CLARK_LOGN0, p["c"], p["d"] + p["a"] * _CLARK_LOGN0]
  elif name == "krajewski":
    cols = [_log(p["a"]), _log(p["b"]), _log(p["g"]), _log(p["c"]), p["alpha"], p["beta"],
            p["gamma"]]
  elif name == "lr":
    cols = [_log(p["c"]) + p["a"] * _LR_LOGN0 + p["b"] * _LR_LOGD0, p["a"], p["b"]]
  elif name == "batch":
    cols = [_log(p["k"]) + p["e"] * _BATCH_LOGC0, p["e"]]
  elif name == "critical_batch":
    cols = [_log(p["B_star"]), 1.0 / p["alpha_B"]]
  elif name == "critical_batch_d":
    cols = [_log(p["k_D"]) + p["e_D"] * _LR_LOGD0, p["e_D"]]
  else:
    raise KeyError(name)
  return np.stack(np.broadcast_arrays(*cols), -1)


def huber(r, delta: float = HUBER_DELTA):
  """Huber loss of residuals `r` (Huber 1964), quadratic inside |r| <= delta."""
  import jax.numpy as jnp
  a = jnp.abs(r)
  return jnp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


@functools.cache
def objective(name: str, delta: float = HUBER_DELTA) -> Callable:
  """Hoffmann et al. 2022, Eq. 3: sum_i w_i Huber_delta(log L_hat_i - log L_i) for law `name`.

  The returned function is cached so the batched optimiser can cache its compilation on it.
  """
  spec = LAWS[name]

  def fun(theta, data):
    import jax.numpy as jnp
    r = spec.log_predict(theta, data) - data["logL"]
    return jnp.sum(data["w"] * huber(r, delta))

  fun.__name__ = f"huber_{name}"
  return fun


def predict(name: str, theta: np.ndarray, data: dict[str, np.ndarray]) -> np.ndarray:
  """Predicted loss for one `theta` (numpy in, numpy out)."""
  return np.exp(evaluate(name, theta, data))


# --- Closed-form consequences of the Chinchilla law. -------------------------------------------
def chinchilla_optimal(E, A, B, alpha, beta, flops, flops_per_param_token: float = 6.0):
  """Compute-optimal N, D and loss of L = E + A/N^alpha + B/D^beta under C = k N D.

  Hoffmann et al. 2022, Eq. 4: N_opt = G (C/k)^a, D_opt = G^-1 (C/k)^b with
  G = (alpha A / (beta B))^(1 / (alpha + beta)), a = beta / (alpha + beta),
  b = alpha / (alpha + beta); k = 6 in the paper (C = 6ND). Broadcasts over all arguments.

  Returns:
    dict with `params` (N_opt, parameters), `tokens` (D_opt), `loss` (nats/token), `G`, `a`, `b`.
  """
  E, A, B, alpha, beta, flops = (np.asarray(v, np.float64) for v in
                                 (E, A, B, alpha, beta, flops))
  # Applied to every bootstrap replicate, some of which are degenerate (an exponent or scale
  # at 0, a scale at 1e300): they come out inf/NaN, which `Fit.intervals` drops, and must not
  # print numpy warnings on the way.
  with np.errstate(divide="ignore", over="ignore", invalid="ignore", under="ignore"):
    a = beta / (alpha + beta)
    b = alpha / (alpha + beta)
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))
    x = flops / flops_per_param_token
    n = G * x ** a
    d = x ** b / G
    loss = E + A / n ** alpha + B / d ** beta
  return {"params": n, "tokens": d, "loss": loss, "G": G, "a": a, "b": b}
