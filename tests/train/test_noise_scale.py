"""The gradient noise scale (scaling/train/step.py): the step's two-batch-size estimator against
the exact per-example gradient covariance of a tiny model, the running average and its error,
and B_simple in metrics.jsonl and result.json."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from scaling.config import default_config
from scaling.models.dense import build_model
from scaling.train import coordinates
from scaling.train.step import NOISE_KEYS, NoiseScale, cross_entropy, make_steps, noise_estimates


def _tiny_cfg(microbatches):
  cfg = default_config()
  cfg.model.update(num_layers=1, d_model=32, num_heads=2, num_kv_heads=2, d_ff=64,
                   vocab_size=64, max_len=16, dtype="float32")
  cfg.train.update(microbatches=microbatches, global_batch=16, seq_len=12)
  return cfg


def _population(n=64, seq_len=12):
  """n sequences of the synthetic language, every target counted (mask 1): the population the
  batches are drawn from, with replacement (so micro-batches are i.i.d.)."""
  (batch,) = coordinates.language_batches(n, seq_len, 1, seed=3, vocab_size=64,
                                          num_contexts=64, body_length=13)
  return batch["inputs"], batch["targets"]


def _exact_noise_scale(graphdef, params, inputs, targets):
  """tr(Sigma) / |G|^2 in tokens from the exact per-sequence gradients (float64 sums)."""

  def loss_one(p, x, y):
    logits = nnx.merge(graphdef, p)(x[None])
    nll, _, count = cross_entropy(logits, y[None], jnp.ones_like(y[None], jnp.float32), 0.0)
    return nll / count  # per-token mean of one sequence

  per = jax.jit(jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0)))(params, inputs, targets)
  flat = np.concatenate([np.asarray(g, np.float64).reshape(len(inputs), -1)
                         for g in jax.tree.leaves(per)], axis=1)  # [n, P]
  mean = flat.mean(0)
  trace_per_sequence = np.mean(np.sum((flat - mean) ** 2, axis=1))
  return inputs.shape[1] * trace_per_sequence / np.sum(mean ** 2)


@pytest.mark.slow(seconds=9)
def test_step_estimator_matches_the_exact_per_example_covariance():
  cfg = _tiny_cfg(microbatches=4)
  graphdef, params = nnx.split(build_model(cfg))
  inputs, targets = _population()
  exact = _exact_noise_scale(graphdef, params, inputs, targets)

  # The real train step with an optimizer that never moves: every step sees the same params.
  train_step, _ = make_steps(graphdef, cfg, optax.set_to_zero())
  train_step = jax.jit(train_step)
  state = {"step": jnp.int32(0), "params": params, "opt_state": optax.set_to_zero().init(params)}
  rng = np.random.default_rng(0)
  noise = NoiseScale()
  host = []
  for _ in range(300):
    idx = rng.integers(0, len(inputs), cfg.train.global_batch)
    batch = {"inputs": inputs[idx], "targets": targets[idx],
             "mask": np.ones(inputs[idx].shape, np.float32)}
    state, metrics = train_step(state, batch)
    host.append(metrics)
  noise.add(jax.device_get(host))
  summary = noise.summary()
  assert summary["grad_noise_scale_steps"] == 300
  assert summary["grad_noise_scale"] == pytest.approx(exact, rel=0.10)
  # Its stated error covers the miss (3 standard errors).
  assert abs(summary["grad_noise_scale"] - exact) < 3 * summary["grad_noise_scale_stderr"]


def test_estimates_are_unbiased_formulas_and_the_step_adds_no_host_sync():
  # McCandlish et al. 2018, App. A.1 with exact expectations: E|G_b|^2 = |G|^2 + tr/b.
  g2, tr, b, big = 2.0, 50.0, 8.0, 32.0
  est = noise_estimates(g2 + tr / b, g2 + tr / big, b, big)
  assert est == (pytest.approx(g2), pytest.approx(tr))
  cfg = _tiny_cfg(microbatches=2)
  graphdef, params = nnx.split(build_model(cfg))
  train_step, _ = make_steps(graphdef, cfg, optax.set_to_zero())
  inputs, targets = _population(16)
  batch = {"inputs": inputs, "targets": targets, "mask": np.ones(inputs.shape, np.float32)}
  state = {"step": jnp.int32(0), "params": params, "opt_state": ()}
  jaxpr = str(jax.make_jaxpr(train_step)(state, batch))
  assert "callback" not in jaxpr and "outfeed" not in jaxpr  # nothing reaches the host
  _, metrics = jax.eval_shape(train_step, state, batch)
  assert set(NOISE_KEYS) <= set(metrics)
  _, metrics = jax.eval_shape(make_steps(graphdef, _tiny_cfg(1), optax.set_to_zero())[0],
                              state, batch)
  assert not set(NOISE_KEYS) & set(metrics)  # one batch size: nothing to estimate


def test_running_average_and_its_standard_error():
  noise = NoiseScale()
  assert noise.summary() == {}
  g2 = np.array([1.0, 2.0, 0.5, 1.5])
  tr = np.array([30.0, 50.0, 20.0, 60.0])
  noise.add([{NOISE_KEYS[0]: a, NOISE_KEYS[1]: b} for a, b in zip(g2, tr, strict=True)])
  noise.add([{"loss": 1.0}])  # a step without estimates (microbatches = 1) adds nothing
  s = noise.summary()
  ratio = tr.mean() / g2.mean()
  se = np.sqrt(np.sum((tr - ratio * g2) ** 2) / (4 * 3)) / g2.mean()
  assert s == {"grad_noise_scale": pytest.approx(ratio), "grad_noise_scale_steps": 4,
               "grad_noise_scale_stderr": pytest.approx(se)}
  noise.reset()
  noise.add([{NOISE_KEYS[0]: -1.0, NOISE_KEYS[1]: 5.0}])
  assert noise.summary() == {"grad_noise_scale_steps": 1}  # |G|^2 <= 0: no ratio


def assert_noise_logged(workdir, record: dict, *, window: int) -> None:
  """The noise scale of a run trained with train.microbatches >= 2: every eval line of
  `workdir/metrics.jsonl` carries B_simple over the `window` steps since the previous eval (and
  no other line does), every line the last step's raw estimates, and `record` (its result.json)
  the last eval's value. Called from tests/train/test_loop.py's microbatch run, which trains
  such a run anyway (an end-to-end run of its own would cost ~10 s)."""
  lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  evals = [x for x in lines if "eval_loss" in x]
  assert evals
  for x in evals:
    assert x["grad_noise_scale_steps"] == window
    assert x["grad_noise_scale"] > 0 and x["grad_noise_scale_stderr"] > 0
  assert all("grad_noise_scale" not in x for x in lines if "eval_loss" not in x)
  assert all(NOISE_KEYS[0] in x and NOISE_KEYS[1] in x for x in lines)
  assert record["grad_noise_scale"] == evals[-1]["grad_noise_scale"]
  assert record["grad_noise_scale_stderr"] == evals[-1]["grad_noise_scale_stderr"]
  assert record["parametrization"]["name"] == "sp"
