"""The dense transformer: shapes, causality, sharded construction, numerics across meshes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.models.dense import build_model
from scaling.parallel.mesh import make_mesh
from scaling.parallel.sharding import logical_to_spec
from tests.helpers import load_config


def _tiny(**model):
  cfg = load_config("configs/dense.py:tiny")
  cfg.model.dtype = "float32"
  cfg.model.update(model)
  return cfg


def _apply(model, tokens, mesh=None):
  graphdef, state = nnx.split(model)
  fn = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))
  if mesh is None:
    return np.asarray(fn(state, tokens))
  with jax.set_mesh(mesh):
    return np.asarray(fn(state, tokens))


def test_logits_shape_and_dtype():
  cfg = _tiny(dtype="bfloat16")
  logits = build_model(cfg)(jnp.zeros((2, 16), jnp.int32))
  assert logits.shape == (2, 16, cfg.model.vocab_size)
  assert logits.dtype == jnp.float32
  params = nnx.state(build_model(cfg), nnx.Param)
  assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype("float32")}


@pytest.mark.parametrize("variant", [
    dict(), dict(position="learned", mlp="gelu"), dict(position="relative", qk_norm=True),
    dict(num_kv_heads=1, tied_embeddings=False, logit_softcap=30.0),
])
def test_causal(variant):
  cfg = _tiny(**variant)
  model = build_model(cfg)
  tokens = jax.random.randint(jax.random.key(0), (2, 24), 0, cfg.model.vocab_size)
  t = 13
  changed = tokens.at[:, t].set((tokens[:, t] + 1) % cfg.model.vocab_size)
  a, b = _apply(model, tokens), _apply(model, changed)
  np.testing.assert_allclose(a[:, :t], b[:, :t], rtol=0, atol=1e-6)
  assert np.abs(a[:, t:] - b[:, t:]).max() > 1e-4  # the change is visible from t on


def test_shallow_stacks_run_straight_line_deep_ones_loop(monkeypatch):
  from scaling.models import dense

  assert jax.default_backend() == "cpu"
  assert dense.straight_line(dense.CPU_UNROLL, True) and not dense.straight_line(
      dense.CPU_UNROLL + 1, True)
  assert dense.straight_line(48, False)  # scan_layers=False always unrolls
  # The looped program (what a deep stack runs) computes what the straight-line one does.
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 512)
  model = build_model(_tiny())
  straight = _apply(model, tokens)
  monkeypatch.setattr(dense, "CPU_UNROLL", 1)
  assert not dense.straight_line(2, True)
  np.testing.assert_allclose(_apply(model, tokens), straight, atol=1e-5)


@pytest.mark.parametrize("remat", ["full", "dots_saveable"])
def test_remat_and_unrolled_match_scan(remat):
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 512)
  base = _apply(build_model(_tiny()), tokens)
  np.testing.assert_allclose(_apply(build_model(_tiny(remat=remat)), tokens), base, atol=1e-5)
  np.testing.assert_allclose(_apply(build_model(_tiny(scan_layers=False)), tokens), base,
                             atol=1e-5)

  def grads(cfg):
    graphdef, state = nnx.split(build_model(cfg))
    loss = lambda s: nnx.merge(graphdef, s)(tokens).mean()
    return jax.grad(loss)(state)

  g0, g1 = grads(_tiny()), grads(_tiny(remat=remat))
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_sharded_build_matches_single_device_and_is_sharded():
  cfg = _tiny()
  cfg.mesh.update(data=2, model=4, expert=1)
  mesh = make_mesh(cfg.mesh)
  sharded = build_model(cfg, mesh)
  single = build_model(cfg)
  tokens = jax.random.randint(jax.random.key(2), (4, 32), 0, cfg.model.vocab_size)
  np.testing.assert_allclose(_apply(sharded, tokens, mesh), _apply(single, tokens), atol=2e-5)

  rules = dict(cfg.mesh.rules)
  state = nnx.state(sharded, nnx.Param)
  for path, var in nnx.to_flat_state(state):
    names = var.get_metadata()["out_sharding"]
    array = var.get_value()
    assert array.sharding.spec == logical_to_spec(names, rules), path
  up = state["blocks"]["mlp"]["up"]["kernel"].get_value()
  # [layers, embed, mlp] with mlp over model=4: each device holds a quarter of d_ff.
  assert up.addressable_shards[0].data.shape == (2, 64, 64)
  embedding = state["embed"]["embedding"].get_value()
  assert embedding.addressable_shards[0].data.shape == (128, 64)  # vocab 512 / 4


def test_fsdp_rule_shards_over_data():
  cfg = _tiny()
  cfg.mesh.update(data=8, model=1, expert=1)
  cfg.mesh.rules.embed = "data"
  model = build_model(cfg, make_mesh(cfg.mesh))
  up = nnx.state(model, nnx.Param)["blocks"]["mlp"]["up"]["kernel"].get_value()
  assert up.addressable_shards[0].data.shape == (2, 8, 256)


def test_indivisible_sharding_names_parameter_and_rule():
  from scaling.errors import ScalingError

  cfg = _tiny(num_heads=2, num_kv_heads=2)
  cfg.mesh.update(data=2, model=4, expert=1)
  with pytest.raises(ScalingError, match=r"heads=2.*mesh.rules.heads"):
    build_model(cfg, make_mesh(cfg.mesh))


def test_kv_heads_have_their_own_rule():
  # GQA: 2 kv heads cannot split 4 ways, so with the default rule (kv_heads like heads) the
  # build is refused naming the kv_heads rule; replicating kv heads alone makes it build, with
  # query heads still split over `model`.
  from scaling.errors import ScalingError

  cfg = _tiny(num_heads=4, num_kv_heads=2)
  cfg.mesh.update(data=2, model=4, expert=1)
  with pytest.raises(ScalingError, match=r"kv_heads=2.*change mesh.rules.kv_heads or"):
    build_model(cfg, make_mesh(cfg.mesh))
  cfg.mesh.rules.kv_heads = ""
  mesh = make_mesh(cfg.mesh)
  model = build_model(cfg, mesh)
  attn = nnx.state(model, nnx.Param)["blocks"]["attn"]
  # [layers, d_model, heads, head_dim] per device.
  assert attn["key"]["kernel"].get_value().addressable_shards[0].data.shape == (2, 64, 2, 16)
  assert attn["query"]["kernel"].get_value().addressable_shards[0].data.shape == (2, 64, 1, 16)


def test_sharding_answers_the_mesh_questions():
  from scaling.config import DEFAULT_RULES
  from scaling.parallel import sharding

  shape = {"data": 4, "model": 2, "expert": 3}
  assert sharding.data_parallel_width(DEFAULT_RULES, shape) == 12  # batch over data,expert
  assert sharding.data_parallel_width({**DEFAULT_RULES, "batch": "data"}, shape) == 4
  assert sharding.data_parallel_width({**DEFAULT_RULES, "batch": ""}, shape) == 1
  assert sharding.expert_axes(DEFAULT_RULES) == ("expert",)
  assert sharding.expert_parallel_width(DEFAULT_RULES, shape) == 3
  assert sharding.expert_parallel_width(DEFAULT_RULES, {}) == 1  # no mesh
  rules = {**DEFAULT_RULES, "embed": "data"}  # FSDP: weights gathered inside shard_map
  names = ("expert", "embed", "mlp")
  assert sharding.logical_to_spec(names, rules) == jax.sharding.PartitionSpec(
      "expert", "data", "model")
  assert sharding.local_spec(names, rules, keep=("expert", "mlp")) == \
      jax.sharding.PartitionSpec("expert", None, "model")
  # An axis taken by an earlier name stays taken, whether that name is kept or not.
  both = {**DEFAULT_RULES, "mlp": "expert,model"}
  assert sharding.local_spec(names, both, keep=("mlp",)) == \
      jax.sharding.PartitionSpec(None, None, "model")


def test_remat_names_match_the_config():
  from scaling.config import REMAT_POLICIES
  from scaling.models.dense import CHECKPOINT_POLICIES

  assert set(CHECKPOINT_POLICIES) == set(REMAT_POLICIES) - {"none"}


def test_fast_compiled_initialiser_gives_the_optimized_parameters(monkeypatch):
  """build_model compiles its initialiser without XLA's backend optimizations on the CPU; the
  parameters must be bitwise those of a fully optimized compile (runs started before and after
  the change, or on either setting, begin from the same weights)."""
  from scaling import xla_options

  cfg = _tiny()
  cfg.mesh.update(data=2, model=4, expert=1)
  mesh = make_mesh(cfg.mesh)
  fast = nnx.state(build_model(cfg, mesh))
  monkeypatch.setitem(xla_options.INIT, "cpu", {"xla_backend_optimization_level": 3,
                                                "xla_llvm_disable_expensive_passes": False})
  optimized = nnx.state(build_model(cfg, mesh))
  pairs = zip(jax.tree.leaves(fast), jax.tree.leaves(optimized), strict=True)
  for a, b in pairs:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert a.sharding == b.sharding
