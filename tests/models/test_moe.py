"""Mixture-of-Experts: routing, capacity, dispatch equivalence, router losses, expert
parallelism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling import accounting
from scaling.kernels import backend
from scaling.models import moe as moe_lib
from scaling.models.dense import abstract_model, build_model
from scaling.parallel.mesh import make_mesh
from tests.helpers import load_config


def _cfg(**moe):
  cfg = load_config("configs/moe.py:tiny")
  cfg.model.dtype = "float32"
  cfg.model.moe.update(moe)
  return cfg


def _layer(cfg):
  return moe_lib.MoeMlp(cfg.model, dict(cfg.mesh.rules), rngs=nnx.Rngs(0))


def _dispatch(layer, x, ids, weights, cap, dispatch, w_up=None):
  pos = moe_lib.slot_positions(ids, layer.m.moe.num_experts)
  a = moe_lib.Assignment(ids, weights, pos, pos < cap)
  w = layer.expert_weights()
  w = w if w_up is None else w._replace(up=w_up)
  if dispatch == "einsum":
    return moe_lib.einsum_dispatch(x, a, cap, w)
  if dispatch == "pallas":
    return moe_lib.pallas_dispatch(x, a, cap, w, rules=layer.rules, kernels=layer.kernels)
  return moe_lib.sort_dispatch(x, a, cap, w)


def _reference(layer, x, ids, weights, keep):
  """Token by token: y = sum over kept choices of w * expert_j(x)."""
  w_gate, w_up, w_down = (np.asarray(a) for a in (layer.w_gate[...], layer.w_up[...],
                                                  layer.w_down[...]))
  x, ids, weights, keep = map(np.asarray, (x, ids, weights, keep))
  y = np.zeros_like(x)
  silu = lambda z: z / (1 + np.exp(-z))
  for b, t, k in np.ndindex(*ids.shape):
    if keep[b, t, k]:
      e = ids[b, t, k]
      h = silu(x[b, t] @ w_gate[e]) * (x[b, t] @ w_up[e])
      y[b, t] += weights[b, t, k] * (h @ w_down[e])
  return y


@pytest.mark.parametrize("top_k", [1, 2, 8])
@pytest.mark.parametrize("routing", ["random", "one_expert", "expert0_idle"])
@pytest.mark.parametrize("dispatch", ["einsum", "sort", "pallas"])
def test_dispatch_matches_reference_values_and_grads(top_k, routing, dispatch):
  cfg = _cfg(top_k=top_k, dropless=True)
  layer = _layer(cfg)
  b, length, e = 2, 12, cfg.model.moe.num_experts
  x = jax.random.normal(jax.random.key(1), (b, length, cfg.model.d_model))
  scores = jax.random.normal(jax.random.key(2), (b, length, e))
  if routing == "one_expert":
    scores = scores.at[..., 3].add(100.0)  # every token's first choice is expert 3
  if routing == "expert0_idle":
    scores = scores.at[..., 0].add(-100.0)  # expert 0 never chosen (unless top_k = E)
  ids, weights, _ = moe_lib.route(scores, cfg.model.moe)
  keep = jnp.ones(ids.shape, bool)
  want = _reference(layer, x, ids, weights, keep)
  got = _dispatch(layer, x, ids, weights, length, dispatch)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)

  def loss(x, w_up, d):
    return jnp.sum(jnp.sin(_dispatch(layer, x, ids, weights, length, d, w_up)))

  w_up = layer.w_up[...]
  g_ref = jax.grad(loss, argnums=(0, 1))(x, w_up, "einsum")
  g = jax.grad(loss, argnums=(0, 1))(x, w_up, dispatch)
  for a, r in zip(g, g_ref, strict=True):
    np.testing.assert_allclose(a, r, atol=2e-5, rtol=1e-4)


def test_capacity_drops_follow_priority_and_formula():
  cfg = _cfg(top_k=1, capacity_factor=1.0, dropless=False, num_experts=4)
  length = 16
  cap = moe_lib.capacity(cfg.model, length, train=True)
  assert cap == 4  # ceil(1.0 * 16 * 1 / 4)
  ids = jnp.zeros((1, length, 1), jnp.int32)  # every token to expert 0
  pos = moe_lib.slot_positions(ids, 4)
  keep = pos < cap
  assert keep[0, :, 0].tolist() == [True] * 4 + [False] * 12  # first come, first served
  # Choice-major priority: with top-2, all first choices are queued before any second choice.
  ids2 = jnp.array([[[0, 1], [1, 0], [0, 1]]], jnp.int32)
  assert moe_lib.slot_positions(ids2, 2)[0].tolist() == [[0, 1], [0, 2], [1, 2]]

  layer = _layer(cfg)
  x = jax.random.normal(jax.random.key(0), (1, length, cfg.model.d_model))
  weights = jnp.ones((1, length, 1))
  for dispatch in ("einsum", "sort", "pallas"):
    y = np.asarray(_dispatch(layer, x, ids, weights, cap, dispatch))
    assert np.all(y[0, 4:] == 0)  # dropped tokens get nothing (the residual carries them)
    np.testing.assert_allclose(y, _reference(layer, x, ids, weights, keep), atol=2e-5)


def test_eval_capacity_and_dropless():
  m = _cfg(capacity_factor=1.25, eval_capacity_factor=2.0, top_k=2, num_experts=8).model
  assert moe_lib.capacity(m, 64, train=True) == 20  # ceil(1.25 * 64 * 2 / 8)
  assert moe_lib.capacity(m, 64, train=False) == 32
  m.moe.dropless = True
  assert moe_lib.capacity(m, 64, train=True) == 64


def test_load_balance_loss_minimum_and_growth():
  e, length = 8, 64
  uniform_probs = jnp.full((1, length, e), 1.0 / e)
  uniform_ids = (jnp.arange(length) % e).reshape(1, length, 1)
  assert float(moe_lib.load_balance_loss(uniform_probs, uniform_ids)) == pytest.approx(1.0)
  skewed_probs = jax.nn.softmax(jnp.zeros((1, length, e)).at[..., 0].set(3.0))
  skewed_ids = jnp.zeros((1, length, 1), jnp.int32)
  skewed = float(moe_lib.load_balance_loss(skewed_probs, skewed_ids))
  assert skewed == pytest.approx(e * float(skewed_probs[0, 0, 0]))
  assert skewed > 5.0


def test_router_losses_reach_the_training_objective():
  cfg = _cfg()
  model = build_model(cfg)
  tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, 512)
  _, aux = model(tokens, train=True, return_aux=True)
  lb = aux["stats"]["load_balance"]
  assert lb.shape == (cfg.model.num_layers,)
  assert float(aux["losses"]["load_balance"]) == pytest.approx(0.01 * float(jnp.sum(lb)))
  assert aux["stats"]["expert_fraction"].shape == (2, 8)
  np.testing.assert_allclose(jnp.sum(aux["stats"]["expert_fraction"], axis=-1), 1.0, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("dispatch", ["einsum", "sort", "pallas"])
def test_expert_parallel_meshes_match_one_device(dispatch):
  cfg = _cfg(dropless=True, dispatch=dispatch)
  tokens = jax.random.randint(jax.random.key(3), (8, 16), 0, 512)
  single = build_model(cfg)
  want_logits, want_aux = single(tokens, return_aux=True)
  for shape in [(1, 1, 8), (2, 1, 4), (2, 2, 2)]:
    cfg.mesh.update(data=shape[0], model=shape[1], expert=shape[2])
    mesh = make_mesh(cfg.mesh)
    model = build_model(cfg, mesh)
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda s, t, g=graphdef: nnx.merge(g, s)(t, return_aux=True))
    with jax.set_mesh(mesh):
      logits, aux = fn(state, tokens)
    np.testing.assert_allclose(logits, want_logits, atol=5e-5, err_msg=str(shape))
    np.testing.assert_allclose(aux["losses"]["load_balance"],
                               want_aux["losses"]["load_balance"], rtol=1e-5)
    w_up = nnx.state(model, nnx.Param)["blocks"]["block0"]["mlp"]["w_up"].get_value()
    # [layers, experts, d_model, d_ff]: experts split over `expert`, d_ff over `model`.
    assert w_up.addressable_shards[0].data.shape == (2, 8 // shape[2], 64, 128 // shape[1])


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(8, 1, 1), (4, 2, 1)])
def test_pallas_dispatch_runs_the_kernels_per_batch_shard(shape):
  """Data (and tensor) parallel meshes without an expert axis: the kernels run inside
  shard_map on each device's rows (XLA cannot partition a Pallas call; under plain jit every
  device would gather and compute the whole batch), with the same numbers as one device."""
  cfg = _cfg(dispatch="pallas")  # capacity 1.25: drops happen, decided per sequence
  tokens = jax.random.randint(jax.random.key(4), (8, 16), 0, 512)
  kernels = backend.KernelBackend.resolve(interpret=True)
  want_logits, want_aux = build_model(cfg, kernels=kernels)(tokens, return_aux=True)
  cfg.mesh.update(data=shape[0], model=shape[1], expert=shape[2])
  mesh = make_mesh(cfg.mesh)
  graphdef, state = nnx.split(build_model(cfg, mesh, kernels=kernels))
  fn = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t, return_aux=True))
  with jax.set_mesh(mesh):
    logits, aux = fn(state, tokens)
    jaxpr = str(jax.make_jaxpr(fn)(state, tokens))
  np.testing.assert_allclose(logits, want_logits, atol=5e-5)
  np.testing.assert_allclose(aux["stats"]["dropped_fraction"], want_aux["stats"][
      "dropped_fraction"], atol=1e-6)
  # Each device's grouped matmul sees its own rows: (8 / data) x 16 tokens x top_k 2.
  rows = 8 // shape[0] * 16 * cfg.model.moe.top_k
  assert "shard_map" in jaxpr and f"f32[{rows},64]" in jaxpr
  assert f"f32[{8 * 16 * cfg.model.moe.top_k},64]" not in jaxpr


def test_mixtral_counts_are_exact():
  cfg = load_config("configs/moe.py:mixtral_8x7b")
  counts = accounting.param_counts(cfg.model)
  # Jiang et al. 2024; exact counts recomputed in published_model_shapes.md.
  assert counts["params_total"] == 46_702_792_704
  assert counts["params_active"] == 12_879_925_248
  assert counts["params_active_non_embedding"] == 12_617_781_248
  assert accounting.count_params(nnx.state(abstract_model(cfg), nnx.Param)) == \
      counts["params_total"]


def test_moe_every_and_shared_experts_count_leaves():
  cfg = _cfg(every=2, num_shared_experts=1, top_k=1)
  cfg.model.num_layers = 4
  model = build_model(cfg)
  counts = accounting.param_counts(cfg.model)
  assert accounting.count_params(nnx.state(model, nnx.Param)) == counts["params_total"]
  flops = accounting.flops_per_token(cfg.model, 128)
  assert flops["6N"] == 6 * counts["params_active_non_embedding"]
  logits = model(jnp.zeros((1, 8), jnp.int32))
  assert logits.shape == (1, 8, 512)


@pytest.mark.parametrize("change,message", [
    (dict(top_k=9), r"model.moe.top_k=9 must be in \[1, model.moe.num_experts=8\]"),
    (dict(every=3), r"model.moe.every=3 must divide model.num_layers=2"),
    (dict(dispatch="triton"), r"model.moe.dispatch='triton'; choose 'einsum', 'sort' or 'pallas'"),
])
def test_bad_moe_config(change, message):
  from scaling.config import validate
  from scaling.errors import ScalingError

  cfg = _cfg(**change)
  with pytest.raises(ScalingError, match=message):
    validate(cfg)
