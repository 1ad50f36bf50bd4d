"""Schedules, optimizers and the size-based hyper-parameter rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.config import default_config
from scaling.train.optimizer import apply_size_rules, deepseek_hparams, make_optimizer, schedule


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


def test_deepseek_rule():
  # DeepSeek LLM Eq. 1 at C = 1e20: eta = 0.3118 * 1e20^-0.125, B = 0.2920 * 1e20^0.3271 tokens.
  lr, batch = deepseek_hparams(1e20)
  assert lr == pytest.approx(0.3118 * 10 ** (-2.5))
  assert batch == pytest.approx(0.2920 * 10 ** (20 * 0.3271))
  cfg = default_config()
  cfg.train.update(hparam_rule="deepseek", seq_len=1024, microbatches=2)
  apply_size_rules(cfg, 1e20)
  assert cfg.train.lr == pytest.approx(lr)
  assert cfg.train.global_batch % 2 == 0
  assert abs(cfg.train.global_batch * 1024 - batch) / batch < 0.01
