"""Config validation: every user mistake gets one message naming the field."""

import pytest

from scaling.config import validate
from scaling.errors import ScalingError
from scaling.models.shapes import ladder_shape, log_spaced_depths
from tests.helpers import load_config


@pytest.mark.parametrize("field,value,message", [
    ("model.num_heads", 5, r"model.num_heads=5 does not divide model.d_model=64"),
    ("model.num_kv_heads", 3, r"model.num_kv_heads=3 does not divide model.num_heads=4"),
    ("model.mlp", "relu", r"model.mlp='relu' is unknown"),
    ("model.remat", "some", r"model.remat='some' is unknown"),
    ("mesh.rules.embed", "dta", r"mesh.rules.embed='dta': unknown mesh axis 'dta'"),
    ("train.seq_len", 4096, r"train.seq_len=4096 is longer than model.max_len=128"),
    ("train.global_batch", 10, r"train.global_batch=10 is not divisible by train.microbatches=4"),
])
def test_bad_field_is_named(field, value, message):
  cfg = load_config("configs/dense.py:tiny")
  cfg.train.microbatches = 4
  section, *rest = field.split(".")
  target = cfg[section]
  for key in rest[:-1]:
    target = target[key]
  target[rest[-1]] = value
  with pytest.raises(ScalingError, match=message):
    validate(cfg)


def test_unknown_rule_axis():
  cfg = load_config("configs/dense.py:tiny")
  with cfg.mesh.rules.unlocked():
    cfg.mesh.rules.tokens = "data"
  with pytest.raises(ScalingError, match=r"mesh.rules.tokens: unknown logical axis"):
    validate(cfg)


def test_unknown_preset():
  with pytest.raises(ScalingError, match=r"unknown model preset 'gpt5'.*tiny"):
    load_config("configs/dense.py:gpt5")


@pytest.mark.parametrize("preset", ["tiny", "small", "gpt2_124m", "gpt3_175b", "chinchilla_70b",
                                    "llama2_7b", "llama2_70b", "ladder_d3"])
def test_presets_validate(preset):
  validate(load_config(f"configs/dense.py:{preset}"))


def test_ladder_rule_spans_1e4_to_1e11():
  from scaling.accounting import param_counts
  from scaling.config import default_config

  def n(depth, aspect=64):
    cfg = default_config()
    cfg.model.update(ladder_shape(depth, aspect=aspect))
    validate(cfg)
    return param_counts(cfg.model)["params_non_embedding"]

  assert 1e4 <= n(1, aspect=32) < 3e4
  assert 1e11 <= n(128) < 2e11
  sizes = [n(d) for d in range(1, 20)]
  assert sizes == sorted(sizes)  # monotone in the knob
  depths = log_spaced_depths(1e5, 1e9, 6)
  assert depths == sorted(set(depths)) and len(depths) >= 5
