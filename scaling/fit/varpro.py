"""Variable projection for L(N, D) = E + A/N^alpha + B/D^beta (Golub & Pereyra 1973).

For fixed (alpha, beta) the prediction is linear in (E, A, B) >= 0, so the five-parameter fit
reduces to a search over two exponents: `--method=varpro`. The objective is Hoffmann's (Huber,
delta = 1e-3, on log loss, Hoffmann et al. 2022 Eq. 3); the inner problem is solved by
Gauss-Newton on the log residual with iteratively reweighted least squares for the Huber weights
(Holland & Welsch 1977), each step an exact 3-variable non-negative least squares (all 7 active
sets enumerated, the best feasible one kept: the NNLS optimum is the unconstrained optimum on its
own support, Lawson & Hanson 1974, Ch. 23). The outer search is a grid over (alpha, beta)
refined by repeated zooming, so it cannot stall in a poor basin of the 5-D landscape.
Everything is batched in JAX over candidate exponents and bootstrap replicates.
"""

from __future__ import annotations

import functools

import numpy as np

from scaling.fit import base
from scaling.fit import laws as laws_lib
from scaling.fit.base import Fit
from scaling.fit.table import Table

# Half-width of the exponent window a bootstrap replicate searches around the full-data fit;
# a replicate whose optimum lies on it has run into the search's bound (`checks`).
BOOTSTRAP_WINDOW = 0.3

_SUPPORTS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1],
                      [1, 1, 1]], np.float64)


def _inner(alpha, beta, d, iters: int, delta: float):
  """Profiles (E, A, B) >= 0 for one (alpha, beta); returns (objective, coef[3])."""
  import jax
  import jax.numpy as jnp

  phi = jnp.stack([jnp.ones_like(d["logN"]), jnp.exp(-alpha * d["logN"]),
                   jnp.exp(-beta * d["logD"])], -1)  # [n, 3]
  L = jnp.exp(d["logL"])
  masks = jnp.asarray(_SUPPORTS)

  def nnls(G, h):
    # Solve on every support; infeasible (negative) solutions lose.
    def one(m):
      M = G * m[:, None] * m[None, :] + jnp.diag(1.0 - m)
      c = jnp.linalg.solve(M, h * m) * m
      q = c @ G @ c - 2.0 * h @ c
      return c, jnp.where(jnp.all(c >= 0), q, jnp.inf)

    cs, qs = jax.vmap(one)(masks)
    return cs[jnp.argmin(qs)]

  def step(_, c):
    p = jnp.maximum(phi @ c, 1e-300)
    r = jnp.log(p) - d["logL"]
    # IRLS weight for Huber: psi(r) / r = min(1, delta / |r|).
    om = d["w"] * jnp.minimum(1.0, delta / jnp.maximum(jnp.abs(r), 1e-300)) / (p * p)
    # Linearised log residual: r(c') ~ (phi c' - t) / p with t = p (1 - r).
    t = p * (1.0 - r)
    G = (phi * om[:, None]).T @ phi
    h = (phi * om[:, None]).T @ t
    return nnls(G, h)

  # Start from the relative-error least squares fit (p = L, r = 0).
  om0 = d["w"] / (L * L)
  c0 = nnls((phi * om0[:, None]).T @ phi, (phi * om0[:, None]).T @ L)
  c = jax.lax.fori_loop(0, iters, step, c0)
  r = jnp.log(jnp.maximum(phi @ c, 1e-300)) - d["logL"]
  return jnp.sum(d["w"] * laws_lib.huber(r, delta)), c


@functools.lru_cache(maxsize=8)
def _profile_fn(iters: int, delta: float, batched: bool):
  import jax

  f = jax.vmap(lambda al, be, d: _inner(al, be, d, iters, delta), in_axes=(0, 0, None))
  if batched:  # replicates: each with its own weights and its own candidate exponents
    f = jax.vmap(f, in_axes=(0, 0, 0))
  return jax.jit(f)


def _search(d: dict, centre, half_width, steps: int, levels: int, iters: int, delta: float,
            batched: bool):
  """Grid over (alpha, beta) around `centre` ([R, 2] when batched), zoomed `levels` times."""
  import jax
  import jax.numpy as jnp

  with jax.enable_x64(True):
    fn = _profile_fn(iters, delta, batched)
    dj = {k: jnp.asarray(v, jnp.float64) for k, v in d.items()}
    centre = np.asarray(centre, np.float64)
    hw = np.asarray(half_width, np.float64)
    u = np.linspace(-1, 1, steps)
    off = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)  # [K, 2]
    for _ in range(levels):
      cand = np.maximum(centre[..., None, :] + off * hw, 1e-3)  # [(R,) K, 2]
      vals, coefs = fn(jnp.asarray(cand[..., 0]), jnp.asarray(cand[..., 1]), dj)
      vals = np.asarray(vals)
      best = np.argmin(vals, axis=-1)
      centre = np.take_along_axis(cand, best[..., None, None], axis=-2)[..., 0, :]
      coef = np.take_along_axis(np.asarray(coefs), best[..., None, None], axis=-2)[..., 0, :]
      value = np.take_along_axis(vals, best[..., None], axis=-1)[..., 0]
      hw = hw * 2.0 / (steps - 1)  # next grid spans one cell either side of the winner
    return centre, coef, value


def fit_varpro(table: Table, *, bootstrap: int = 0, seed: int = 0,
               delta: float = laws_lib.HUBER_DELTA, exponent_range=(0.0, 2.5),
               iters: int = 12) -> Fit:
  """Variable-projection fit of the Chinchilla law (see module docstring).

  The first search covers alpha, beta in `exponent_range` on a 51 x 51 grid, then zooms 6 times
  (final resolution ~1e-5). Bootstrap replicates search a +-0.3 window around the full-data
  exponents (9 x 9, `BOOTSTRAP_WINDOW`), then zoom the same way.
  """
  base.check_identifiable(table, "chinchilla")
  d = base.design(table, "chinchilla")
  lo, hi = exponent_range
  centre = np.array([(lo + hi) / 2] * 2)
  (alpha, beta), coef, value = _search(d, centre, np.array([(hi - lo) / 2] * 2), 51, 7, iters,
                                       delta, False)
  params = {"E": float(coef[0]), "A": float(coef[1]), "B": float(coef[2]),
            "alpha": float(alpha), "beta": float(beta)}
  fit = Fit("chinchilla", 3, "varpro", params, {}, len(table), objective=float(value),
            info={"formula": laws_lib.LAWS["chinchilla"].formula,
                  "source": "Hoffmann et al. 2022, Eq. 2-3; variable projection over (E, A, B)",
                  "huber_delta": delta, "table": table.source,
                  "preparation": list(table.notes), "exponent_range": [lo, hi],
                  "exponent_grid_step": (hi - lo) / 50,
                  "bootstrap_window": BOOTSTRAP_WINDOW})
  if bootstrap:
    counts = base.resample_counts(len(table), bootstrap, seed)
    ab, cf = refit_weights(d, counts, (alpha, beta), delta=delta, iters=iters)
    fit.samples = {"E": cf[:, 0], "A": cf[:, 1], "B": cf[:, 2], "alpha": ab[:, 0],
                   "beta": ab[:, 1]}
    fit.info["bootstrap"] = {"samples": bootstrap, "seed": seed,
                             "resampling": "runs, with replacement"}
  return fit


def refit_weights(d: dict, weights: np.ndarray, exponents, *,
                  delta: float = laws_lib.HUBER_DELTA, iters: int = 12
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Refits with each row of `weights` `[R, n]` (bootstrap counts, or 0/1 masks that leave runs
  out), searching `BOOTSTRAP_WINDOW` around the full-data `exponents` (alpha, beta).

  Returns:
    ((alpha, beta) `[R, 2]`, (E, A, B) `[R, 3]`).
  """
  r = weights.shape[0]
  db = {k: np.broadcast_to(v, (r, len(v))) for k, v in d.items() if k != "w"}
  db["w"] = np.asarray(weights, np.float64)
  c0 = np.broadcast_to(np.asarray(exponents, np.float64), (r, 2))
  ab, cf, _ = _search(db, c0, np.array([BOOTSTRAP_WINDOW] * 2), 9, 6, iters, delta, True)
  return ab, cf
