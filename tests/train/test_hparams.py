"""The one implementation of the size rules (scaling/hparam_rules.py): DeepSeek LLM Eq. 1 and
fitted laws, the same learning rate and batch through `scaling train` and through a ladder."""

import json

import pytest

from scaling import hparam_rules
from scaling.config import default_config, validate
from scaling.errors import ScalingError
from scaling.ladder.spec import expand, isoflop_sweep
from scaling.storage import write_json
from tests.helpers import load_config, run_cli


def test_deepseek_eq1():
  # DeepSeek LLM Eq. 1 at C = 1e20: eta = 0.3118 * 1e20^-0.125, B = 0.2920 * 1e20^0.3271 tokens.
  lr, batch = hparam_rules.deepseek(1e20)
  assert lr == pytest.approx(0.3118 * 10 ** (-2.5))
  assert batch == pytest.approx(0.2920 * 10 ** (20 * 0.3271))


def test_bounds_and_variant_multipliers():
  rule = hparam_rules.DEEPSEEK
  kw = dict(params=1e6, tokens=2e7, seq_len=1024, lr=1.0, global_batch=1)
  lr, batch = hparam_rules.resolve(rule, flops=1e20, microbatches=2, **kw)
  assert lr == pytest.approx(hparam_rules.deepseek(1e20)[0], rel=1e-3)  # 4 significant digits
  assert batch % 16 == 0  # batch_multiple 8 x 2 microbatches
  assert abs(batch * 1024 / hparam_rules.deepseek(1e20)[1] - 1) < 0.02
  # Tiny budgets hit the bounds: lr_max caps the rate, min_batch floors the batch.
  assert hparam_rules.resolve(rule, flops=1e6, **kw) == (0.02, 8)
  capped = hparam_rules.Bounds(max_batch=64)
  assert hparam_rules.resolve(rule, flops=1e20, bounds=capped, **kw)[1] == 64
  # A sweep variant multiplies the bounded values: x2 above the cap is what it asked for.
  assert hparam_rules.resolve(rule, flops=1e6, lr_mult=2, batch_mult=3, **kw) == (0.04, 24)
  # "fixed" (no law for a quantity) keeps the config's value, still times the variant.
  fixed = hparam_rules.SizeRule(None, None, "fixed")
  assert hparam_rules.resolve(fixed, flops=1e20, lr_mult=0.5, **dict(kw, lr=0.003,
                                                                     global_batch=32)) == (
      0.0015, 32)


def _fit_json(path, law, params):
  write_json(path, {"law": law, "params": params, "intervals": {}})
  return str(path)


def test_fit_rule_reads_fitted_laws_and_falls_back_to_deepseek(tmp_path):
  lr_fit = _fit_json(tmp_path / "lr" / "fit.json", "lr", {"c": 2.0, "a": -0.3, "b": -0.05})
  b_fit = _fit_json(tmp_path / "b.json", "batch", {"k": 0.5, "e": 0.3})
  rule = hparam_rules.parse(f"fit:{tmp_path / 'lr'}")  # the --out folder holds fit.json
  assert rule.lr(1e6, 1e8, 1e15) == pytest.approx(2.0 * 1e6 ** -0.3 * 1e8 ** -0.05)
  assert rule.batch(1e15) == pytest.approx(hparam_rules.deepseek(1e15)[1])
  both = hparam_rules.parse(f"fit:{lr_fit},{b_fit}")
  assert both.batch(1e15) == pytest.approx(0.5 * 1e15 ** 0.3)
  assert "fitted lr law" in both.source and "fitted batch law" in both.source


@pytest.mark.parametrize("spec, message", [
    ("adam", "train.hparam_rule='adam' is unknown; choose '' (none), 'deepseek' or 'fit:PATH'"),
    ("fit:{d}/nope.json", "train.hparam_rule=fit:{d}/nope.json: no such fit.json"),
    ("fit:{d}/chin.json", "train.hparam_rule=fit:{d}/chin.json is a 'chinchilla' fit; a size "
     "rule needs a fit of `scaling fit --law=lr`"),
    ("fit:{d}/lr.json,{d}/lr.json", "names two lr fits"),
    ("fit:{d}/bad.json", "the lr fit has no finite parameter 'a'"),
])
def test_bad_rules_are_one_line_naming_the_field(tmp_path, spec, message):
  _fit_json(tmp_path / "chin.json", "chinchilla", {"E": 1.7})
  _fit_json(tmp_path / "lr.json", "lr", {"c": 2.0, "a": -0.3, "b": 0.0})
  _fit_json(tmp_path / "bad.json", "lr", {"c": 2.0, "a": None, "b": 0.0})
  cfg = default_config()
  cfg.train.hparam_rule = spec.format(d=tmp_path)
  with pytest.raises(ScalingError, match=_escape(message.format(d=tmp_path))):
    validate(cfg)


def _escape(s):
  import re

  return re.escape(s)


def test_scaling_train_refuses_a_bad_rule_in_one_line(tmp_path, capfd):
  code, err = run_cli(capfd, ["train", "--config=configs/dense.py:tiny",
                              f"--workdir={tmp_path / 'w'}",
                              f"--config.train.hparam_rule=fit:{tmp_path}/missing.json"])
  assert code == 2 and err.count("\n") == 1 and err.startswith(
      f"error: train.hparam_rule=fit:{tmp_path}/missing.json: no such fit.json")
  assert not (tmp_path / "w").exists()


def test_scaling_train_keeps_its_tokens_and_scales_warmup():
  cfg = default_config()
  cfg.train.update(hparam_rule="deepseek", steps=1000, global_batch=8, seq_len=128,
                   warmup_steps=100)
  tokens = 1000 * 8 * 128
  hparam_rules.apply_to_train(cfg, {"params_non_embedding": 1e6, "tokens": tokens,
                                    "flops_per_token": 1e7})
  t = cfg.train
  lr, batch_tokens = hparam_rules.deepseek(tokens * 1e7)
  assert t.lr == pytest.approx(lr, rel=1e-3) and t.global_batch % 8 == 0
  assert abs(t.steps * t.global_batch * 128 / tokens - 1) < 0.05  # D kept, steps re-derived
  assert t.warmup_steps == round(100 * t.steps / 1000)


def test_scaling_train_and_a_ladder_rung_at_the_same_c_get_the_same_lr_and_batch(tmp_path):
  from scaling.config import load
  from scaling.train.loop import resolve_config

  lad = load_config("tests/ladder/tiny_ladder.py")
  lad.run.train.seq_len = 32
  lad.ladder.rules.update(max_batch=0, min_steps=4)  # the default bounds, as `scaling train`'s
  lad.ladder.sweeps.iso = isoflop_sweep([6e9], depths=(2, 4), tolerance=0.1)
  rung = expand(lad)[0]
  # Budget = the rung's own spend, so the rule sees one C on both sides (no step rounding).
  lad.ladder.sweeps.iso.budgets = (rung.counts["flops"],)
  rung = expand(lad)[0]
  t = rung.config.train
  assert rung.counts["flops"] == pytest.approx(rung.budget, rel=1e-12)
  assert t.lr < 0.02 and t.global_batch > 8  # the rule itself, not its bounds, decides here
  # The same model, data and tokens as a `scaling train --config=FILE` run, lr and batch left
  # to the rule; `resolve_config` is the first thing `scaling.train.loop.train` does with it.
  run = rung.config.to_dict()
  for key in ("ladder", "run_id"):
    run.pop(key)
  run["train"].update(hparam_rule="deepseek", lr=0.5, global_batch=8,
                      steps=t.steps * t.global_batch // 8, warmup_steps=8)
  (tmp_path / "run.json").write_text(json.dumps(run))
  (tmp_path / "run.py").write_text(
      "import json, ml_collections\n\ndef get_config(arg=None):\n"
      f"  return ml_collections.ConfigDict(json.load(open({str(tmp_path / 'run.json')!r})))\n")
  trained = resolve_config(load(f"{tmp_path / 'run.py'}")).train
  assert (trained.lr, trained.global_batch, trained.steps) == (t.lr, t.global_batch, t.steps)
