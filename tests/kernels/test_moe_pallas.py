"""The `pallas` MoE dispatch: the layer with interpreted kernels against `sort`, and training."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.kernels import backend
from scaling.models import moe as moe_lib
from scaling.train.loop import train
from tests.helpers import load_config
from tests.kernels.helpers import assert_close


def _layer_grads(cfg, dispatch, x, interpret):
  cfg = cfg.copy_and_resolve_references()
  cfg.model.moe.dispatch = dispatch
  kernels = backend.KernelBackend.resolve(interpret=interpret)  # fixed when the layer is built
  layer = moe_lib.MoeMlp(cfg.model, dict(cfg.mesh.rules), rngs=nnx.Rngs(0), kernels=kernels)
  graphdef, state = nnx.split(layer)

  def loss(state, x):
    y, aux = nnx.merge(graphdef, state)(x, train=True)
    return jnp.sum(jnp.sin(y.astype(jnp.float32))) + aux["load_balance"], (y, aux)

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(state, x)


@pytest.mark.parametrize("dtype,dropless,top_k", [
    ("float32", False, 2),  # capacity 1.0: drops
    ("float32", True, 1),
    ("bfloat16", False, 2),
])
def test_pallas_layer_matches_sort(dtype, dropless, top_k):
  cfg = load_config("configs/moe.py:tiny")  # d_model 64, 8 experts of width 128
  cfg.model.dtype = dtype
  cfg.model.moe.update(top_k=top_k, dropless=dropless, capacity_factor=1.0)
  x = jax.random.normal(jax.random.key(0), (2, 12, cfg.model.d_model))
  (_, (y0, aux0)), g0 = _layer_grads(cfg, "sort", x, None)
  (_, (y1, aux1)), g1 = _layer_grads(cfg, "pallas", x, True)  # every kernel interpreted
  if not dropless:
    assert float(aux1["dropped_fraction"]) > 0
  np.testing.assert_allclose(aux1["dropped_fraction"], aux0["dropped_fraction"])
  np.testing.assert_allclose(aux1["load_balance"], aux0["load_balance"], rtol=1e-6)
  dt = jnp.dtype(dtype).type
  assert y1.dtype == y0.dtype
  assert_close(y1, y0, dt)
  for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(g1),
                               jax.tree_util.tree_leaves_with_path(g0), strict=True):
    scale = float(np.max(np.abs(np.asarray(b, np.float32)))) or 1.0
    assert_close(np.asarray(a, np.float32) / scale, np.asarray(b, np.float32) / scale, dt,
                 "grads", jax.tree_util.keystr(path))


@pytest.fixture
def tiny_moe_cfg(tmp_path_factory):
  # The tests/train tiny config (copied: its fixture is not visible here) with MoE layers.
  cfg = load_config("configs/dense.py:tiny")
  cfg.model.update(num_layers=2, d_model=32, num_heads=4, num_kv_heads=4, d_ff=64,
                   vocab_size=256, max_len=64, dtype="float32")
  cfg.model.moe.update(num_experts=4, top_k=2, expert_d_ff=32, capacity_factor=1.0)
  cfg.train.update(steps=20, global_batch=8, seq_len=64, warmup_steps=2, log_every=1,
                   eval_every=20, eval_batches=1, checkpoint_every=100, lr=1e-2)
  cfg.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
  cfg.data.synthetic.update(train_tokens=65536, validation_tokens=16384, num_contexts=256)
  return cfg


@pytest.mark.slow
def test_pallas_dispatch_trains_like_sort(tiny_moe_cfg, tmp_path):
  # On CPU the `pallas` dispatch runs the kernels' pure-JAX references (the normal CPU path):
  # fused-router math, the sort-free permutation plan, gathers and ragged_dot.
  curves = {}
  for dispatch in ("sort", "pallas"):
    cfg = tiny_moe_cfg.copy_and_resolve_references()
    cfg.model.moe.dispatch = dispatch
    train(cfg, tmp_path / dispatch)
    lines = (tmp_path / dispatch / "metrics.jsonl").read_text().splitlines()
    curves[dispatch] = [json.loads(x)["loss"] for x in lines if "loss" in json.loads(x)]
  assert len(curves["pallas"]) == 20
  assert curves["pallas"][-1] < curves["pallas"][0]
  np.testing.assert_allclose(curves["pallas"], curves["sort"], rtol=2e-4)


def test_layer_keeps_the_kernels_it_was_built_with():
  # The kernel backend is a static field fixed when the layer is built (there is no
  # process-wide default to change it later): a layer built to interpret the Pallas kernels
  # traces them wherever it is traced, one built for CPU traces the references.
  cfg = load_config("configs/moe.py:tiny")
  cfg.model.moe.dispatch = "pallas"
  x = jnp.zeros((1, 8, cfg.model.d_model))

  def jaxpr(layer):
    graphdef, state = nnx.split(layer)
    return str(jax.make_jaxpr(lambda s: nnx.merge(graphdef, s)(x, train=True))(state))

  interpreted = moe_lib.MoeMlp(cfg.model, dict(cfg.mesh.rules), rngs=nnx.Rngs(0),
                               kernels=backend.KernelBackend.resolve(interpret=True))
  reference = moe_lib.MoeMlp(cfg.model, dict(cfg.mesh.rules), rngs=nnx.Rngs(0),
                             kernels=backend.KernelBackend("cpu", interpret=False))
  default = moe_lib.MoeMlp(cfg.model, dict(cfg.mesh.rules), rngs=nnx.Rngs(0))
  assert interpreted.kernels == backend.KernelBackend(jax.default_backend(), interpret=True)
  assert default.kernels == backend.KernelBackend(jax.default_backend(), interpret=None)
  assert "pallas_call" in jaxpr(interpreted)
  assert "pallas_call" not in jaxpr(reference)
