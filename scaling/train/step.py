"""The pure train and eval steps: loss, gradient accumulation, clipping, optimizer update.

The train state is a plain dict pytree {"step", "params", "opt_state"}: `params` is the model's
NNX State (a pytree), the model graph (`graphdef`) is static and closed over, so the step is an
ordinary pure function for `jax.jit`.

Gradient noise scale. With `train.microbatches` M >= 2 the step also returns the unbiased
estimates of |G|^2 and tr(Sigma) from the two batch sizes it already has (McCandlish et al.
2018, "An Empirical Model of Large-Batch Training", arXiv:1812.06162, App. A.1): each
micro-batch of b = B/M tokens gives a gradient G_b, the whole batch G_B, and with
S = mean over micro-batches of |G_b|^2,

    |G|^2  ~ (B |G_B|^2 - b S) / (B - b)         tr(Sigma) ~ (S - |G_B|^2) / (1/b - 1/B)

(`noise_estimates`). The cost is one sum of squares per micro-batch, inside the accumulation
scan: no second backward pass and no host sync (the estimates are metrics, fetched with the
others). `NoiseScale` averages the two estimates separately over the steps since the last
evaluation and divides, B_simple = tr(Sigma) / |G|^2 (tokens; McCandlish et al. 2018, Eq. 2.8
and App. A.1), with the standard error of that ratio. With M = 1 there is no second batch size
and nothing is estimated.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from scaling.train.optimizer import make_optimizer

# An auxiliary loss hook: (model, batch) -> {name: scalar} added to the loss and logged. The MoE
# router losses plug in here.
AuxLossFn = Callable[[nnx.Module, dict], dict[str, jax.Array]]


def cross_entropy(logits_BxLxV: jax.Array, targets_BxL: jax.Array, mask_BxL: jax.Array,
                  z_loss: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Summed next-token cross entropy (nats), summed z-loss, and the number of counted tokens.

  z-loss: coefficient x log(Z)^2 per token (Chowdhery et al. 2022, PaLM, Sec. 5), keeps the
  softmax normaliser near 1.
  """
  log_z_BxL = jax.nn.logsumexp(logits_BxLxV, axis=-1)
  target_logit = jnp.take_along_axis(logits_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
  nll = (log_z_BxL - target_logit) * mask_BxL
  return nll.sum(), z_loss * (jnp.square(log_z_BxL) * mask_BxL).sum(), mask_BxL.sum()


NOISE_KEYS = ("noise/grad_sq", "noise/trace")  # per-step estimates of |G|^2 and tr(Sigma)


def noise_estimates(micro_sq: jax.Array, full_sq: jax.Array, b_small, b_big):
  """Unbiased (|G|^2, tr(Sigma)) from two batch sizes (McCandlish et al. 2018, App. A.1).

  Args:
    micro_sq: mean of |G_b|^2 over the micro-batches, each gradient a per-token mean over
      `b_small` tokens.
    full_sq: |G_B|^2 of the per-token mean gradient over all `b_big` tokens.
  Returns:
    (|G|^2, tr(Sigma)), tr(Sigma) per token (so tr(Sigma) / |G|^2 is in tokens).
  """
  g2 = (b_big * full_sq - b_small * micro_sq) / (b_big - b_small)
  trace = (micro_sq - full_sq) / (1.0 / b_small - 1.0 / b_big)
  return g2, trace


class NoiseScale:
  """Host-side running average of the per-step noise estimates (the metrics `NOISE_KEYS`).

  McCandlish et al. 2018 (App. A.1) average |G|^2 and tr(Sigma) separately over many steps
  and take the ratio, since single-step estimates are noisy and |G|^2 may even come out
  negative. `summary` gives B_simple = mean tr / mean |G|^2 over the steps added since the
  last `reset` (the loop resets at each evaluation) and its standard error as a ratio
  estimator, sqrt(sum_i (tr_i - B g2_i)^2 / (n (n - 1))) / mean g2 (Cochran 1977, "Sampling
  Techniques", Ch. 6), treating steps as independent draws.
  """

  def __init__(self):
    self.g2: list[float] = []
    self.trace: list[float] = []

  def add(self, host: list[dict]) -> None:
    """Adds the steps of `host` (metrics already fetched to the host) that carry estimates."""
    for m in host:
      if NOISE_KEYS[0] in m:
        self.g2.append(float(m[NOISE_KEYS[0]]))
        self.trace.append(float(m[NOISE_KEYS[1]]))

  def reset(self) -> None:
    self.g2, self.trace = [], []

  def summary(self) -> dict:
    """`grad_noise_scale` (tokens), `grad_noise_scale_stderr` and `grad_noise_scale_steps`;
    {} without estimates, only the step count when the mean |G|^2 is not positive."""
    n = len(self.g2)
    if not n:
      return {}
    g2, tr = sum(self.g2) / n, sum(self.trace) / n
    if not g2 > 0:
      return {"grad_noise_scale_steps": n}
    b = tr / g2
    out = {"grad_noise_scale": b, "grad_noise_scale_steps": n}
    if n > 1:
      resid = sum((t - b * g) ** 2 for t, g in zip(self.trace, self.g2, strict=True))
      out["grad_noise_scale_stderr"] = math.sqrt(resid / (n * (n - 1))) / g2
    return out


def make_steps(graphdef: nnx.GraphDef, cfg: ml_collections.ConfigDict,
               optimizer: optax.GradientTransformation, aux_loss_fn: AuxLossFn | None = None):
  """Returns (train_step, eval_step), pure functions of (state or params, batch).

  `train_step(state, batch, lr=None)`: with `lr` (a float32 scalar, this step's learning rate)
  the optimizer's schedule is replaced by it, so the compiled step holds no schedule constant
  (peak, warm-up, length): rungs, branches and LR variants of one shape share one program, and
  the persistent compilation cache serves all but the first (`scaling.train.loop` passes
  `schedule(step)`, the value the optimizer would have computed). Without `lr`, `optimizer`'s
  own schedule.
  """
  t = cfg.train

  def model_of(params):
    return nnx.merge(graphdef, params)

  def loss_fn(params, batch, rng):
    model = model_of(params)
    logits, out = model(batch["inputs"], train=True, rng=rng, return_aux=True)
    nll, zl, count = cross_entropy(logits, batch["targets"], batch["mask"], t.z_loss)
    # Mean-type losses (router losses, the hook's) are scaled by the token count here because
    # the step divides every sum by the count at the end.
    aux = dict(out["losses"])
    if aux_loss_fn:
      aux.update(aux_loss_fn(model, batch))
    total = nll + zl + sum(aux.values()) * count
    sums = {"nll_sum": nll, "z_loss_sum": zl, "count": count,
            **{k: v * count for k, v in aux.items()}}
    sums.update({f"moe/{k}": v * count for k, v in out["stats"].items()})
    return total, sums

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state, batch, lr=None):
    params = state["params"]
    opt = optimizer if lr is None else make_optimizer(t, cfg.model, lr=lambda _: lr)
    m = t.microbatches
    # Router jitter noise is a pure function of (seed, step), so resumed runs repeat it.
    rng = jax.random.fold_in(jax.random.key(t.seed), state["step"])
    if m == 1:
      (_, sums), grads = grad_fn(params, batch, rng)
    else:
      # [B, L] -> [B/M, M, L] -> [M, B/M, L]: each data shard keeps its own rows in every
      # microbatch, so splitting the batch moves no data between devices.
      micro = jax.tree.map(lambda x: jnp.swapaxes(x.reshape(x.shape[0] // m, m, *x.shape[1:]),
                                                  0, 1), batch)
      zeros = jax.tree.map(jnp.zeros_like, params)

      def accumulate(carry, inputs):
        g_acc, s_acc, sq_acc = carry
        mb, key = inputs
        (_, sums), g = grad_fn(params, mb, key)
        # |G_b|^2 of this micro-batch's per-token mean gradient: the noise scale's one extra
        # reduction (module doc).
        sq = optax.tree.norm(g, squared=True) / jnp.square(jnp.maximum(sums["count"], 1.0))
        return (jax.tree.map(jnp.add, g_acc, g), jax.tree.map(jnp.add, s_acc, sums),
                sq_acc + sq), None

      keys = jax.random.split(rng, m)
      (_, sums0), _ = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro),
                                     keys[0])
      init = (zeros, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sums0),
              jnp.zeros((), jnp.float32))
      (grads, sums, micro_sq), _ = jax.lax.scan(accumulate, init, (micro, keys))
    count = jnp.maximum(sums["count"], 1.0)
    grads = jax.tree.map(lambda g: g / count, grads)
    updates, opt_state = opt.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    metrics = {k: v / count for k, v in sums.items() if k not in ("count", "nll_sum")}
    metrics["loss"] = sums["nll_sum"] / count
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["tokens"] = sums["count"]
    if m > 1:
      metrics[NOISE_KEYS[0]], metrics[NOISE_KEYS[1]] = noise_estimates(
          micro_sq / m, optax.tree.norm(grads, squared=True), count / m, count)
    return {"step": state["step"] + 1, "params": new_params, "opt_state": opt_state}, metrics

  def eval_step(params, batch):
    logits = model_of(params)(batch["inputs"])
    nll, _, count = cross_entropy(logits, batch["targets"], batch["mask"], 0.0)
    return {"nll_sum": nll, "count": count}

  return train_step, eval_step
