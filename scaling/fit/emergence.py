"""Is an 'emergent' jump real or a metric artifact? (Schaeffer et al. 2023, 'Are emergent
abilities of large language models a mirage?').

Given per-example, per-token probabilities of the correct token (or 0/1 correctness) for each
model of a ladder, the same ability is scored three ways: exact match (all K tokens right),
per-token accuracy, and log-likelihood of the answer. If per-token metrics improve smoothly
while exact match appears to jump, the jump comes from the metric's nonlinearity: with
per-token accuracy p, exact match over K tokens is p^K (Schaeffer et al. 2023, Sec. 2).
"""

from __future__ import annotations

import numpy as np

from scaling.errors import ScalingError


def metrics(token_probs) -> dict[str, np.ndarray]:
  """Scores each model on the same examples three ways.

  Args:
    token_probs: `[models, examples, tokens]` probabilities (or 0/1 correctness) of the correct
      token; ragged answers can be padded with 1.0 (a padded token is always right).

  Returns:
    dict of `[models]` arrays: `exact_match` (expected fraction of examples with every token
    right, product over tokens), `token_accuracy` (mean per-token probability), and
    `log_likelihood` (mean over examples of the summed log-probability, nats).
  """
  p = np.asarray(token_probs, np.float64)
  if p.ndim != 3:
    raise ScalingError(f"token_probs must be [models, examples, tokens]; got shape {p.shape}")
  if np.any((p < 0) | (p > 1)) or not np.isfinite(p).all():
    raise ScalingError("token_probs must be probabilities in [0, 1]")
  return {"exact_match": p.prod(-1).mean(-1), "token_accuracy": p.mean((-1, -2)),
          "log_likelihood": np.log(np.maximum(p, 1e-300)).sum(-1).mean(-1)}


def sharpness(x, y) -> float:
  """Share of a metric's total rise that happens between two adjacent ladder rungs (0..1).

  1/(rungs - 1) for a perfectly even rise in log-size; near 1 when it all happens in one step,
  which is what reads as 'emergence' on a plot.
  """
  order = np.argsort(np.asarray(x))
  y = np.asarray(y, np.float64)[order]
  total = y[-1] - y[0]
  if total <= 0:
    return float("nan")
  return float(np.max(np.diff(y)) / total)


def synthetic_demo(params=None, ks=(1, 4, 8), n0: float = 1e9, slope: float = 0.8,
                   p_max: float = 0.98) -> dict:
  """Schaeffer et al.'s demonstration: per-digit accuracy rises smoothly with N, exact match
  on K-digit answers (p^K) looks sudden.

  Per-token accuracy is a logistic in log N, p(N) = p_max / (1 + (N / n0)^-slope), smooth on a
  log axis; exact match is p(N)^K.

  Returns:
    dict with `params` (N), `token_accuracy` p(N), `exact_match` {K: p^K},
    `log_likelihood` {K: K log p}, and `sharpness` {K: share of rise in the steepest step}.
  """
  n = np.geomspace(1e7, 1e12, 11) if params is None else np.asarray(params, np.float64)
  p = p_max / (1.0 + (n / n0) ** (-slope))
  em = {int(k): p ** k for k in ks}
  return {"params": n, "token_accuracy": p, "exact_match": em,
          "log_likelihood": {int(k): k * np.log(p) for k in ks},
          "sharpness": {int(k): sharpness(np.log(n), em[k]) for k in ks}}


def plot_demo(stem: str, demo: dict | None = None) -> list[str]:
  """Three panels: per-token accuracy, exact match for each K, log-likelihood, against N."""
  from scaling.fit.plots import COLUMN, _plt, _save

  plt = _plt()
  demo = demo or synthetic_demo()
  n = demo["params"]
  fig, axes = plt.subplots(1, 3, figsize=(COLUMN[0] * 2, COLUMN[1] * 0.9))
  axes[0].plot(n, demo["token_accuracy"], "o-", ms=2.5, color="k")
  axes[0].set_ylabel("per-token accuracy p(N)")
  for j, (k, v) in enumerate(demo["exact_match"].items()):
    axes[1].plot(n, v, "o-", ms=2.5, color=f"C{j}", label=f"K = {k}")
    axes[2].plot(n, demo["log_likelihood"][k], "o-", ms=2.5, color=f"C{j}", label=f"K = {k}")
  axes[1].set_ylabel("exact match p(N)^K")
  axes[2].set_ylabel("log-likelihood K log p (nats)")
  axes[1].legend(frameon=False)
  for ax in axes:
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
  axes[1].set_title("same ability, three metrics (Schaeffer et al. 2023)")
  return _save(fig, stem)
