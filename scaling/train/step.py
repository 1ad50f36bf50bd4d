"""The pure train and eval steps: loss, gradient accumulation, clipping, optimizer update.

The train state is a plain dict pytree {"step", "params", "opt_state"}: `params` is the model's
NNX State (a pytree), the model graph (`graphdef`) is static and closed over, so the step is an
ordinary pure function for `jax.jit`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

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


def make_steps(graphdef: nnx.GraphDef, cfg: ml_collections.ConfigDict,
               optimizer: optax.GradientTransformation, aux_loss_fn: AuxLossFn | None = None):
  """Returns (train_step, eval_step), both pure functions of (state or params, batch)."""
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

  def train_step(state, batch):
    params = state["params"]
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
        g_acc, s_acc = carry
        mb, key = inputs
        (_, sums), g = grad_fn(params, mb, key)
        return (jax.tree.map(jnp.add, g_acc, g), jax.tree.map(jnp.add, s_acc, sums)), None

      keys = jax.random.split(rng, m)
      (_, sums0), _ = jax.eval_shape(grad_fn, params, jax.tree.map(lambda x: x[0], micro),
                                     keys[0])
      init = (zeros, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sums0))
      (grads, sums), _ = jax.lax.scan(accumulate, init, (micro, keys))
    count = jnp.maximum(sums["count"], 1.0)
    grads = jax.tree.map(lambda g: g / count, grads)
    updates, opt_state = optimizer.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    metrics = {k: v / count for k, v in sums.items() if k not in ("count", "nll_sum")}
    metrics["loss"] = sums["nll_sum"] / count
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["tokens"] = sums["count"]
    return {"step": state["step"] + 1, "params": new_params, "opt_state": opt_state}, metrics

  def eval_step(params, batch):
    logits = model_of(params)(batch["inputs"])
    nll, _, count = cross_entropy(logits, batch["targets"], batch["mask"], 0.0)
    return {"nll_sum": nll, "count": count}

  return train_step, eval_step
