"""Batched L-BFGS in JAX: many starts (and many bootstrap replicates) of one small fit at once.

Scaling-law fits have five to seven parameters and a few hundred points, so one start is far
too small to keep a CPU busy; Hoffmann et al. (2022, App. D.2) nevertheless run 4,500 starts
one after another. Here a single-start L-BFGS is written with `lax.while_loop` and `jax.vmap`-ed
over starts (and over bootstrap weight vectors), so the whole grid is one XLA program.

Float64 matters: the Huber objective with delta = 1e-3 on log-loss has differences far below
float32 resolution near the optimum. It is enabled only inside `jax.enable_x64(True)`
contexts in this module, never globally, because the model code shares the process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np


def _direction(g, s_hist, y_hist, rho, k, memory: int):
  """The L-BFGS search direction -H g from the last `memory` (s, y) pairs `[memory, P]`."""
  import jax
  import jax.numpy as jnp

  # Two-loop recursion (Nocedal & Wright 2006, Algorithm 7.4) over a circular buffer;
  # slots not yet filled have rho = 0 and so contribute nothing.
  def first(i, carry):
    q, alphas = carry
    idx = (k - 1 - i) % memory
    a = rho[idx] * jnp.dot(s_hist[idx], q)
    return q - a * y_hist[idx], alphas.at[idx].set(a)

  q, alphas = jax.lax.fori_loop(0, memory, first, (g, jnp.zeros(memory, g.dtype)))
  last = (k - 1) % memory
  yy = jnp.dot(y_hist[last], y_hist[last])
  gamma = jnp.where((k > 0) & (yy > 0), jnp.dot(s_hist[last], y_hist[last]) / yy,
                    1.0 / jnp.maximum(1.0, jnp.linalg.norm(g)))
  r = gamma * q

  def second(i, r):
    idx = (k - memory + i) % memory
    b = rho[idx] * jnp.dot(y_hist[idx], r)
    return r + s_hist[idx] * (alphas[idx] - b)

  return -jax.lax.fori_loop(0, memory, second, r)


def _make_solver(fun, *, memory: int, gtol: float, ftol: float):
  """Returns (init, run) for a single-start L-BFGS on `fun(x, data)`; both are vmap-able."""
  import jax
  import jax.numpy as jnp

  value_and_grad = jax.value_and_grad(fun)

  def init(x0, data):
    f0, g0 = value_and_grad(x0, data)
    f0 = jnp.where(jnp.isfinite(f0), f0, jnp.inf)
    zeros = jnp.zeros((memory, x0.shape[0]), x0.dtype)
    return (x0, f0, g0, zeros, zeros, jnp.zeros(memory, x0.dtype), jnp.array(0), jnp.array(0),
            ~jnp.isfinite(f0))

  def step(state, data):
    x, f, g, s_hist, y_hist, rho, k, it, done = state
    d = _direction(g, s_hist, y_hist, rho, k, memory)
    slope = jnp.dot(g, d)
    # A non-descent direction (possible after a skipped update) falls back to steepest descent.
    bad = ~(slope < 0)
    d = jnp.where(bad, -g, d)
    slope = jnp.where(bad, -jnp.dot(g, g), slope)
    # Cap the first trial step at length 10 in parameter space: under vmap the line search
    # costs as many evaluations as the worst start needs, and wild first steps from the corners
    # of Hoffmann's grid would otherwise need many halvings.
    t0 = jnp.minimum(1.0, 10.0 / jnp.maximum(jnp.linalg.norm(d), 1e-300))

    # Backtracking line search with the Armijo condition (c1 = 1e-4), step factor 0.3.
    def ls_cond(c):
      t, f_new, _, n = c
      return (~(f_new <= f + 1e-4 * t * slope)) & (n < 20)

    def ls_body(c):
      t, _, _, n = c
      t = t * 0.3
      f_new, g_new = value_and_grad(x + t * d, data)
      return t, jnp.where(jnp.isfinite(f_new), f_new, jnp.inf), g_new, n + 1

    f1, g1 = value_and_grad(x + t0 * d, data)
    f1 = jnp.where(jnp.isfinite(f1), f1, jnp.inf)
    t, f_new, g_new, _ = jax.lax.while_loop(ls_cond, ls_body, (t0, f1, g1, 0))
    ok = f_new <= f + 1e-4 * t * slope
    s = t * d
    y = g_new - g
    sy = jnp.dot(s, y)
    update = ok & (sy > 1e-12 * jnp.dot(y, y) + 1e-300)
    slot = k % memory
    s_hist = jnp.where(update, s_hist.at[slot].set(s), s_hist)
    y_hist = jnp.where(update, y_hist.at[slot].set(y), y_hist)
    rho = jnp.where(update, rho.at[slot].set(1.0 / jnp.where(update, sy, 1.0)), rho)
    k = k + update.astype(k.dtype)
    x_new = jnp.where(ok, x + s, x)
    f_acc = jnp.where(ok, f_new, f)
    g_acc = jnp.where(ok, g_new, g)
    # Same stopping tests as scipy's L-BFGS-B: relative reduction (ftol) or gradient (gtol);
    # a failed line search also stops, as it does there.
    scale = jnp.maximum(jnp.maximum(jnp.abs(f), jnp.abs(f_acc)), 1.0)
    done = (~ok) | ((f - f_acc) <= ftol * scale) | (jnp.max(jnp.abs(g_acc)) <= gtol)
    return x_new, f_acc, g_acc, s_hist, y_hist, rho, k, it + 1, done

  def run(state, data, until):
    def cond(st):
      return (~st[8]) & (st[7] < until)

    return jax.lax.while_loop(cond, lambda st: step(st, data), state)

  return init, run


@functools.lru_cache(maxsize=64)
def _compiled(fun: Callable, memory: int, gtol: float, ftol: float, batched_data: bool):
  import jax

  init, run = _make_solver(fun, memory=memory, gtol=gtol, ftol=ftol)
  init_v = jax.vmap(init, in_axes=(0, None))
  run_v = jax.vmap(run, in_axes=(0, None, None))
  if batched_data:
    # Outer axis: bootstrap replicates, each with its own data (weights) and its own starts.
    init_v = jax.vmap(init_v, in_axes=(0, 0))
    run_v = jax.vmap(run_v, in_axes=(0, 0, None))

  def start_v(starts, data, until):
    # The first stage starts and runs in one program: one compilation fewer per fit.
    return run_v(init_v(starts, data), data, until)

  return jax.jit(start_v), jax.jit(run_v)


def default_schedule(n_starts: int, max_iter: int) -> tuple[tuple[int, int], ...]:
  """Successive halving for large grids: (starts kept, iteration cap) per stage.

  Every start gets 10 L-BFGS iterations, the best tenth (at least 32) 100 in all, and the best
  1% (at least 16) run to convergence. Under vmap a stage costs as much as its slowest start,
  so pruning is
  what makes 4,500 starts cheap; on the Epoch table it selects the same optimum as running
  all 4,500 to convergence (tests/fit/test_fit_synthetic.py checks a small grid against scipy).
  """
  if n_starts <= 64:
    return ((n_starts, max_iter),)
  return ((n_starts, 10), (max(32, n_starts // 10), 100), (max(16, n_starts // 100), max_iter))


def minimize_batched(fun: Callable, starts: np.ndarray, data: dict, *, batched_data: bool = False,
                     max_iter: int = 1000, memory: int = 10, gtol: float = 1e-10,
                     ftol: float = 2.220446049250313e-09,
                     schedule: tuple[tuple[int, int], ...] | None = None,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Runs L-BFGS from every row of `starts` in float64; returns (x, f, iterations) as numpy.

  `fun(x, data)` must be a pure JAX function of a parameter vector and a dict of arrays; it is
  a cache key for the compiled solver, so pass a long-lived function. With `batched_data`,
  `data` leaves carry a leading replicate axis `[R, ...]` and `starts` is `[R, S, P]`.
  The defaults mirror scipy's L-BFGS-B (`ftol` = its `factr` 1e7 times machine epsilon,
  memory 10). `schedule` (see `default_schedule`) prunes to the best starts between stages, its
  first stage running every start; pruned starts are returned as they were when dropped.
  """
  import jax
  import jax.numpy as jnp

  with jax.enable_x64(True):
    start_v, run_v = _compiled(fun, memory, gtol, ftol, batched_data)
    starts = np.asarray(starts, np.float64)
    d = {k: jnp.asarray(v, jnp.float64) for k, v in data.items()}
    n = starts.shape[-2]
    schedule = schedule or default_schedule(n, max_iter)
    if schedule[0][0] != n:
      raise ValueError(f"schedule {schedule}: its first stage must run all {n} starts")
    state = None  # the first stage starts and runs in one program
    out_x = np.array(starts)
    out_f = np.full(starts.shape[:-1], np.inf)
    out_it = np.zeros(starts.shape[:-1], np.int64)
    alive = np.broadcast_to(np.arange(n), starts.shape[:-1]).copy()  # indices into the grid
    for keep, until in schedule:
      if state is None:
        state = start_v(starts, d, until)
      else:
        if keep < alive.shape[-1]:
          # Pruned on the host: the state is small, and JAX's eager take_along_axis would
          # compile one program per leaf and shape.
          order = np.argsort(np.asarray(state[1]), axis=-1)[..., :keep]
          state = jax.tree.map(lambda v, o=order: np.take_along_axis(
              np.asarray(v), o.reshape(o.shape + (1,) * (v.ndim - o.ndim)), axis=o.ndim - 1),
              state)
          alive = np.take_along_axis(alive, order, axis=-1)
        state = run_v(state, d, until)
      np.put_along_axis(out_x, alive[..., None], np.asarray(state[0]), axis=-2)
      np.put_along_axis(out_f, alive, np.asarray(state[1]), axis=-1)
      np.put_along_axis(out_it, alive, np.asarray(state[7]), axis=-1)
    return out_x, out_f, out_it
