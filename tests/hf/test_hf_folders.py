"""HF folders without torch: safetensors files, import/export round trips, and every refusal.

Fake checkpoints are written with `scaling.hf.files` from the export's own table, so these tests
need no torch; `test_transformers_parity.py` checks the same paths against transformers itself.
"""

import json
import os

import numpy as np
import pytest

from scaling import storage
from scaling.config import default_config
from scaling.hf import arch, files
from tests.helpers import run_cli
from tests.hf.fakes import fake_hf, tiny_model


def read_all(folder):
  f = files.Folder(folder)
  return {n: np.array(f.get(n)) for n in f.names()}


def test_files_round_trip_sharded_and_read_by_safetensors(tmp_path):
  import ml_dtypes
  from safetensors.numpy import load_file  # the reference reader (dev extra)

  rng = np.random.default_rng(1)
  values = {"a.weight": rng.normal(size=(7, 3)).astype(np.float32),
            "b": rng.normal(size=(5,)).astype(ml_dtypes.bfloat16),
            "c": np.arange(6, dtype=np.int64).reshape(2, 3), "d": np.zeros((0, 4), np.float16)}
  specs = [files.Spec(k, v.shape, v.dtype) for k, v in values.items()]
  names = files.write_folder(tmp_path, specs, lambda s: values[s.name], max_shard_bytes=90)
  assert names == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
  index = json.loads((tmp_path / files.INDEX).read_text())
  assert index["weight_map"] == {"a.weight": names[0], "b": names[1], "c": names[1],
                                 "d": names[1]}
  back = read_all(tmp_path)
  ref = {**load_file(tmp_path / names[0]), **load_file(tmp_path / names[1])}
  for k, v in values.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape
    assert back[k].tobytes() == v.tobytes() == np.asarray(ref[k]).tobytes()


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  """A fake Llama folder imported with --notrain: (hf folder, run folder, its weights)."""
  root = tmp_path_factory.mktemp("hf")
  values = fake_hf(root / "hf", tiny_model(), arch.LLAMA, max_shard_bytes=40_000)
  from scaling import cli

  code = cli.main(["import", str(root / "hf"), f"--workdir={root / 'run'}", "--notrain",
                   "--config=configs/dense.py:tiny", "--config.model.dtype=float32"])
  assert code == 0
  return root / "hf", root / "run", values


def test_import_then_export_is_bitwise_and_sharded(imported, tmp_path, capfd):
  hf_dir, run, values = imported
  assert len(files.Folder(hf_dir).entries) == len(values)
  assert os.path.exists(hf_dir / files.INDEX)  # the source is sharded
  code, err = run_cli(capfd, ["export", str(run), f"--out={tmp_path / 'out'}",
                              "--max_shard_gb=0.00003"])
  assert code == 0, err
  assert os.path.exists(tmp_path / "out" / files.INDEX)
  back = read_all(tmp_path / "out")
  assert sorted(back) == sorted(values)
  for k, v in values.items():
    assert back[k].tobytes() == v.tobytes(), k
  config = json.loads((tmp_path / "out" / "config.json").read_text())
  assert config == json.loads((hf_dir / "config.json").read_text())
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary left


def test_bad_steps_tokens_and_outputs(imported, tmp_path, capfd):
  _, run, _ = imported
  np.save(tmp_path / "tok.npy", np.array([1, 2, 64]))
  np.save(tmp_path / "ok.npy", np.array([1, 2, 3]))
  np.save(tmp_path / "tok2d.npy", np.zeros((2, 3), np.int32))
  cases = [
      (["export", str(run), f"--out={tmp_path / 'x'}", "--step=7"], "has no checkpoint at that "
       "step; its steps are 0"),
      (["score", str(run), f"--tokens={tmp_path / 'ok.npy'}", f"--out={tmp_path / 'o.npy'}",
        "--step=3"], "--step=3: "),
      (["score", str(run), f"--tokens={tmp_path / 'tok.npy'}", f"--out={tmp_path / 'o.npy'}"],
       "token 2 is 64, outside the model's vocab [0, 64)"),
      (["score", str(run), f"--tokens={tmp_path / 'tok2d.npy'}", f"--out={tmp_path / 'o.npy'}"],
       "shape [T]"),
      (["score", str(run), f"--tokens={tmp_path / 'tok.npy'}", f"--out={tmp_path / 'tok.npy'}"],
       "exists"),
      (["export", str(run), f"--out={tmp_path}"], "is not an empty folder"),
      (["export", str(tmp_path / "nothing"), f"--out={tmp_path / 'y'}"], "does not exist"),
  ]
  for argv, message in cases:
    code, err = run_cli(capfd, argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (argv, err)
    assert message in lines[0], (argv, err)


def _no_lm_head(config, values):
  values.pop("lm_head.weight")


def _nonzero(name):
  def edit(config, values):
    values[name] = values[name] + 1
  return edit


def _set(**kv):
  def edit(config, values):
    config.update(kv)
  return edit


def _drop_shard(path):
  os.remove(path / "model-00002-of-00002.safetensors")


@pytest.mark.parametrize("kind,model,edit,after,message", [
    (arch.LLAMA, {}, _no_lm_head, None, "is partial: it has no tensor lm_head.weight"),
    (arch.LLAMA, {}, None, _drop_shard, "is partial: model.safetensors.index.json lists "
     "model-00002-of-00002.safetensors, which is missing"),
    (arch.LLAMA, {}, _set(vocab_size=80), None, "config.json vocab_size=80 but "
     "model.embed_tokens.weight has 64 rows"),
    (arch.LLAMA, {}, _set(model_type="gpt2"), None, "model_type='gpt2'"),
    (arch.LLAMA, {}, _set(model_type="mistral", sliding_window=16), None, "sliding_window=16"),
    (arch.LLAMA, {}, _set(attention_bias=True), None, "attention_bias=true"),
    (arch.LLAMA, {}, _set(hidden_act="gelu"), None, "hidden_act='gelu'"),
    (arch.LLAMA, {}, _set(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5}), None,
     "rope_type='llama3'"),
    (arch.QWEN2_MOE, {"moe": dict(num_experts=4, num_shared_experts=1, dropless=True)},
     _nonzero("model.layers.0.mlp.shared_expert_gate.weight"), None,
     "shared-expert gate has no equivalent"),
    (arch.QWEN2_MOE, {"moe": dict(num_experts=4, num_shared_experts=1, dropless=True)},
     _nonzero("model.layers.1.self_attn.k_proj.bias"), None, "an attention bias"),
])
def test_import_refusals(tmp_path, capfd, kind, model, edit, after, message):
  fake_hf(tmp_path / "hf", tiny_model(**model), kind, edit=edit,
          max_shard_bytes=60_000 if after else files.MAX_SHARD_BYTES)
  if after:
    after(tmp_path / "hf")
  code, err = run_cli(capfd, ["import", str(tmp_path / "hf"), f"--workdir={tmp_path / 'w'}",
                              "--notrain"])
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
  assert message in lines[0], err
  assert not os.path.exists(tmp_path / "w")  # refused before anything was written


def test_import_refuses_missing_folders_and_fixed_overrides(tmp_path, capfd):
  (tmp_path / "empty").mkdir()
  (tmp_path / "bin").mkdir()
  storage.write_json(tmp_path / "bin" / "config.json", arch.hf_config(tiny_model(), arch.LLAMA))
  (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"")
  fake_hf(tmp_path / "ok", tiny_model(), arch.LLAMA)
  fake_hf(tmp_path / "tok", tiny_model(), arch.LLAMA)
  storage.write_json(tmp_path / "tok" / "tokenizer.json",
                     {"model": {"vocab": {f"t{i}": i for i in range(60)}},
                      "added_tokens": [{"id": 69, "content": "<x>"}]})
  cases = [
      ([str(tmp_path / "nope")], "does not exist"),
      ([str(tmp_path / "empty")], "has no config.json"),
      ([str(tmp_path / "bin")], "it has pytorch_model.bin: re-save it as safetensors"),
      ([str(tmp_path / "tok")], "has 70 token ids but config.json vocab_size=64"),
      ([str(tmp_path / "ok"), "--config=configs/dense.py:tiny", "--config.model.num_layers=4"],
       "--config.model.num_layers: model.num_layers comes from"),
  ]
  for argv, message in cases:
    code, err = run_cli(capfd, ["import", *argv, f"--workdir={tmp_path / 'w'}", "--notrain"])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (argv, err)
    assert message in lines[0], (argv, err)


def _run_dir(path, m):
  cfg = default_config()
  cfg.model = m
  storage.write_json(path / "config.json", cfg.to_dict())
  return path


MOE = dict(num_experts=4, top_k=2)


@pytest.mark.parametrize("model,message", [
    (dict(position="learned"), "model.position='learned' (learned absolute positions)"),
    (dict(position="relative"), "Transformer-XL relative positions"),
    (dict(mlp="gelu"), "model.mlp='gelu' (a GELU MLP)"),
    (dict(logit_softcap=30.0), "model.logit_softcap=30.0 (logit soft-capping)"),
    (dict(parametrization="mup"), "model.parametrization='mup'"),
    (dict(moe=MOE), "model.moe.dropless=False (capacity-limited routing)"),
    (dict(moe=dict(MOE, dropless=True, every=2)), "model.moe.every=2"),
    (dict(moe=dict(MOE, dropless=True, renormalize=False)), "model.moe.renormalize=False"),
    (dict(qk_norm=True, moe=dict(MOE, dropless=True, num_shared_experts=1)),
     "model.moe.num_shared_experts with model.qk_norm=True"),
    (dict(num_heads=3, num_kv_heads=1, head_dim=8), "model.d_model=32 with model.num_heads=3"),
])
def test_export_refusals(tmp_path, capfd, model, message):
  run = _run_dir(tmp_path, tiny_model(**model))
  code, err = run_cli(capfd, ["export", str(run), f"--out={tmp_path / 'out'}"])
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1 and lines[0].startswith("error: cannot export:"), err
  assert message in lines[0], err
  assert not os.path.exists(tmp_path / "out")


def test_export_refuses_unknown_model_fields_unless_default():
  m = tiny_model()
  m.new_feature = 3  # a field a later version adds: unknown, not at any default
  with pytest.raises(Exception, match="model.new_feature=3 is a feature the Hugging Face"):
    arch.export_type(m)
  assert arch.export_type(tiny_model()) == arch.LLAMA
  assert arch.export_type(tiny_model(qk_norm=True)) == arch.QWEN3
  assert arch.export_type(tiny_model(moe=dict(MOE, dropless=True))) == arch.MIXTRAL
  assert arch.export_type(tiny_model(moe=MOE), dropless=True) == arch.MIXTRAL
  assert arch.export_type(tiny_model(moe=dict(MOE, dropless=True, gating="topk_softmax",
                                              renormalize=False))) == arch.MIXTRAL
  assert arch.export_type(tiny_model(moe=dict(MOE, dropless=True, every=2,
                                              num_shared_experts=1))) == arch.QWEN2_MOE
  assert arch.export_type(tiny_model(qk_norm=True, moe=dict(MOE, dropless=True, every=2))
                          ) == arch.QWEN3_MOE
