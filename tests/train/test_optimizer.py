"""Schedules and optimizers (the size rules are tests/train/test_hparams.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.config import default_config
from scaling.train.optimizer import make_optimizer, schedule


def _train_cfg(**kw):
  t = default_config().train
  t.update({"steps": 100, "warmup_steps": 10, "lr": 1e-3, "min_lr_ratio": 0.1, **kw})
  return t


def test_cosine_warms_up_and_ends_at_floor_on_the_last_step():
  lr = schedule(_train_cfg(schedule="cosine"))
  assert float(lr(0)) == 0.0
  assert float(lr(10)) == pytest.approx(1e-3)
  assert float(lr(100)) == pytest.approx(1e-4)  # the cycle length is the run's length
  values = [float(lr(s)) for s in range(10, 101)]
  assert values == sorted(values, reverse=True)


def test_wsd_is_flat_then_decays_over_the_last_fraction():
  lr = schedule(_train_cfg(schedule="wsd", decay_fraction=0.2))
  assert float(lr(50)) == pytest.approx(1e-3)
  assert float(lr(80)) == pytest.approx(1e-3)
  assert float(lr(90)) == pytest.approx(0.55e-3)
  assert float(lr(100)) == pytest.approx(1e-4)


@pytest.mark.parametrize("name", ["adamw", "lion", "adafactor"])
def test_optimizers_descend_and_skip_decay_on_norms(name):
  opt = make_optimizer(_train_cfg(optimizer=name, warmup_steps=0, lr=1e-2, weight_decay=0.5))
  params = {"w": jnp.ones((4, 4)), "attn_norm": {"scale": jnp.ones((2, 4))}}
  state = opt.init(params)
  loss = lambda p: jnp.sum(jnp.square(p["w"] - 3.0))
  start = loss(params)
  for _ in range(20):
    grads = jax.grad(loss)(params)
    updates, state = opt.update(grads, state, params)
    params = jax.tree.map(jnp.add, params, updates)
  assert loss(params) < start
  # Norm scales get zero gradient and no weight decay, so they do not move.
  np.testing.assert_array_equal(params["attn_norm"]["scale"], 1.0)

