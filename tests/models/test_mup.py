"""μP (scaling/models/parametrization.py): groups and multipliers, the same parameter counts as
SP, the forward-pass multipliers (1/head_dim attention, zero query, readout 1/r), per-group
learning rates, config errors, run ids, `scaling info`, and the coordinate check's bands."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling import accounting
from scaling.config import validate
from scaling.errors import ScalingError
from scaling.models import parametrization as mup
from scaling.models.dense import abstract_model, build_model
from scaling.train import coordinates, identity
from scaling.train.optimizer import make_optimizer
from tests.helpers import load_config, run_cli_captured

VARIANTS = {
    "dense_tied": ("configs/dense.py:tiny", {}),
    "dense_untied": ("configs/dense.py:tiny", {"tied_embeddings": False,
                                               "position": "relative"}),
    "moe_tied": ("configs/moe.py:tiny", {}),
    "moe_untied": ("configs/moe.py:tiny", {"tied_embeddings": False, "position": "learned"}),
    "moe_untied_relative": ("configs/moe.py:tiny", {"tied_embeddings": False,
                                                     "position": "relative"}),
}


def _cfg(name, parametrization="mup", base=32, **model):
  spec, extra = VARIANTS[name]
  cfg = load_config(spec)
  cfg.model.update(dtype="float32", parametrization=parametrization, mup_base_width=base,
                   **extra, **model)
  return validate(cfg)


@pytest.mark.parametrize("name", sorted(set(VARIANTS) - {"moe_untied_relative"}))
def test_mup_changes_no_parameter_count_and_groups_every_matrix(name):
  sp, mu = _cfg(name, "sp"), _cfg(name)
  states = [nnx.state(abstract_model(c), nnx.Param) for c in (sp, mu)]
  assert accounting.count_params(states[0]) == accounting.count_params(states[1])
  assert accounting.param_counts(sp.model) == accounting.param_counts(mu.model)
  assert accounting.count_params(states[1]) == accounting.param_counts(mu.model)["params_total"]
  flat = {"/".join(map(str, p)): mup.group(v.get_metadata()["out_sharding"])
          for p, v in nnx.to_flat_state(states[1])}
  for path, g in flat.items():
    leaf = path.split("/")[-2] if path.endswith(("kernel", "scale", "embedding")) else \
        path.split("/")[-1]
    want = {"query": "hidden", "key": "hidden", "value": "hidden", "out": "hidden",
            "rel": "hidden", "up": "hidden", "gate": "hidden", "down": "hidden",
            "w_up": "hidden", "w_gate": "hidden", "w_down": "hidden", "router": "readout",
            "unembed": "readout", "embed": "embedding", "pos_embed": "embedding"}.get(leaf,
                                                                                     "vector")
    assert g == want, path
  counts = mup.group_counts(states[1])
  assert sum(counts.values()) == accounting.count_params(states[1])
  assert (counts["readout"] > 0) == ("untied" in name or "moe" in name)


def test_multipliers_follow_table_3():
  m = _cfg("dense_tied", base=16).model  # d_model 64: r = 4
  assert mup.width_mult(m) == 4.0
  assert mup.lr_multipliers(m) == {"hidden": 0.25, "embedding": 1.0, "readout": 1.0,
                                   "vector": 1.0}
  assert mup.init_std_multipliers(m)["hidden"] == 0.5
  assert mup.output_multiplier(m) == 0.25 and mup.attention_scale(m) == 1 / 16
  sp = _cfg("dense_tied", "sp").model
  assert mup.output_multiplier(sp) is None and mup.attention_scale(sp) is None
  assert set(mup.lr_multipliers(sp).values()) == {1.0} and mup.width_mult(sp) == 1.0


def test_mup_init_scales_hidden_matrices_and_zeroes_the_query():
  # MoE (experts, router) with an untied readout and relative positions: every group at once.
  name = "moe_untied_relative"
  cfg = _cfg(name, base=16, num_layers=1)  # r = 4: hidden std x 1/2
  state = nnx.state(build_model(cfg), nnx.Param)
  sp_state = nnx.state(build_model(_cfg(name, "sp", num_layers=1)), nnx.Param)
  flat = dict(nnx.to_flat_state(state))
  sp_flat = dict(nnx.to_flat_state(sp_state))
  for path, v in flat.items():
    x, ref = np.asarray(v.get_value()), np.asarray(sp_flat[path].get_value())
    if "query" in path:
      assert not x.any(), path
    elif mup.group(v.get_metadata()["out_sharding"]) == "hidden":
      assert x.std() == pytest.approx(0.5 * ref.std(), rel=0.1), path
    else:
      np.testing.assert_array_equal(x, ref, err_msg=str(path))  # same draws, same std


@pytest.mark.parametrize("tied", [True, False])
def test_readout_multiplier_and_one_over_d_attention(tied):
  # μP at r = 2 against SP with the same parameters: zero the query (the μP init) and the two
  # models differ only by the readout's 1/r; with a random query, μP's q.k / h equals SP's
  # (q / sqrt(h)).k / sqrt(h).
  name = "dense_tied" if tied else "dense_untied"
  cfg = _cfg(name, base=32, num_layers=1)
  h = cfg.model.d_model // cfg.model.num_heads
  graphdef, state = nnx.split(build_model(cfg))
  sp_graphdef, _ = nnx.split(abstract_model(_cfg(name, "sp", num_layers=1)))
  tokens = jax.random.randint(jax.random.key(0), (2, 12), 0, cfg.model.vocab_size)
  fwd = [jax.jit(lambda s, g=g: nnx.merge(g, s)(tokens)) for g in (graphdef, sp_graphdef)]
  run = lambda g, s: np.asarray(fwd[g is sp_graphdef](s))  # noqa: E731
  np.testing.assert_allclose(run(graphdef, state) * 2.0, run(sp_graphdef, state), rtol=1e-5,
                             atol=1e-6)
  q = state["blocks"]["attn"]["query"]["kernel"]
  q.set_value(jax.random.normal(jax.random.key(1), q.get_value().shape))
  mu_logits = run(graphdef, state)
  q.set_value(q.get_value() / math.sqrt(h))
  np.testing.assert_allclose(mu_logits * 2.0, run(sp_graphdef, state), rtol=1e-4, atol=1e-5)
  if tied:  # the coordinate check's measurement runs the same layers as the scanned forward
    stats, logits = jax.jit(lambda s: nnx.merge(graphdef, s).coordinates(tokens))(state)
    np.testing.assert_allclose(np.asarray(logits), run(graphdef, state), rtol=1e-6, atol=1e-6)
    assert set(stats) == {"embed", "block0/attn", "block0/mlp", "logits"}


def test_hidden_learning_rate_is_divided_by_the_width_multiplier():
  cfg = _cfg("dense_untied", base=16, num_layers=1)  # r = 4
  cfg.train.update(warmup_steps=0, lr=1e-2, grad_clip=0.0)
  params = nnx.state(build_model(cfg), nnx.Param)
  grads = jax.tree.map(jnp.ones_like, params)
  updates = {}
  for key, m in (("mup", cfg.model), ("sp", None)):
    opt = make_optimizer(cfg.train, m)
    updates[key], _ = jax.jit(opt.update)(grads, jax.jit(opt.init)(params), params)
  labels = dict(nnx.to_flat_state(mup.param_labels(params)))
  mu, sp = dict(nnx.to_flat_state(updates["mup"])), dict(nnx.to_flat_state(updates["sp"]))
  assert set(labels.values()) == {"hidden", "embedding", "readout", "vector"}
  for path, g in labels.items():
    ratio = 0.25 if g == "hidden" else 1.0
    np.testing.assert_allclose(np.asarray(mu[path].get_value()),
                               ratio * np.asarray(sp[path].get_value()), rtol=1e-6)
  # SP with the model config builds exactly the optimizer without it (same state structure).
  sp_cfg = _cfg("dense_untied", "sp", num_layers=1)
  a, b = make_optimizer(sp_cfg.train, sp_cfg.model), make_optimizer(sp_cfg.train)
  assert jax.tree.structure(a.init(params)) == jax.tree.structure(b.init(params))


@pytest.mark.parametrize("field,value,message", [
    ("parametrization", "mu", r"model.parametrization='mu' is unknown"),
    ("mup_base_width", 0, r"model.mup_base_width=0 must be a positive integer"),
])
def test_bad_parametrization_fields_name_the_field(field, value, message):
  cfg = load_config("configs/dense.py:tiny")
  cfg.model[field] = value
  with pytest.raises(ScalingError, match=message):
    validate(cfg)
  cfg = _cfg("dense_tied")
  cfg.train.optimizer = "adafactor"
  with pytest.raises(ScalingError, match="Adam-type optimizers; use adamw or lion"):
    validate(cfg)


def test_sp_defaults_keep_run_ids_and_mup_changes_them():
  cfg = load_config("configs/dense.py:tiny")
  before = cfg.to_dict()  # a config written before the fields existed
  for key in ("parametrization", "mup_base_width"):
    del before["model"][key]
  assert identity.identity_hash(cfg) == identity.identity_hash(before)
  assert identity.identity_hash(_cfg("dense_tied")) != identity.identity_hash(cfg)


def test_info_shows_per_group_multipliers(capfd):
  argv = ["info", "--config=configs/dense.py:tiny", "--config.model.parametrization=mup",
          "--config.model.mup_base_width=16"]
  code, out, err = run_cli_captured(capfd, argv + ["--json"])
  assert code == 0, err
  p = json.loads(out)["parametrization"]
  assert p["name"] == "mup" and p["width_mult"] == 4.0
  assert p["groups"]["hidden"]["lr_multiplier"] == 0.25
  assert p["groups"]["readout"]["output_multiplier"] == 0.25
  assert sum(g["params"] for g in p["groups"].values()) == json.loads(out)["params_total"]
  code, out, _ = run_cli_captured(capfd, argv)
  assert code == 0 and "learning-rate multipliers hidden x0.25" in out


@pytest.mark.slow(seconds=18)
def test_coordinate_check_bands():
  """One layer: under μP every coordinate's spread across widths 64..256 stays within 2x at
  steps 1, 5 and 10 (measured at most 1.45x); under SP the logits grow from width 64 to 512
  (experiments/coord_check.py runs the full check, μP at 512 too, and its figure)."""
  base = load_config("configs/dense.py:tiny")
  base.model.update(num_layers=1, d_model=64, num_heads=4, num_kv_heads=4, d_ff=64,
                    vocab_size=64, max_len=16, dtype="float32", mup_base_width=64)
  base.train.update(lr=1e-2, warmup_steps=0, schedule="constant", grad_clip=0.0,
                    weight_decay=0.0)
  batches = coordinates.language_batches(8, 16, 10, vocab_size=64, num_contexts=64,
                                         body_length=13)
  mu = coordinates.coord_check(base, [64, 128, 256], "mup", lambda i: batches[i])
  for step, spread in mu["spreads"].items():
    assert max(spread.values()) < 2.0, (step, spread)
  sp = coordinates.coord_check(base, [64, 512], "sp", lambda i: batches[i])
  for step in (1, 5, 10):
    assert coordinates.growth(sp["coordinates"], "logits", step) > 2.0, step
    assert coordinates.growth(sp["coordinates"], "block0/mlp", step) > 10.0, step
