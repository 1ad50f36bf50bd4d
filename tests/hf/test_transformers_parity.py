"""Parity with real `transformers` models on the CPU: import, score, export, train, re-import.

Tiny random-init checkpoints are built with transformers' own config classes (no hub access),
in float32, and scored on a 600-token sequence (short prompts hide RoPE errors). `scaling
score` must match transformers to max |delta NLL| <= 1e-4 per token and a mean KL of the
next-token distributions <= 1e-6; import followed by export must give back every tensor
bitwise; a run trained from an import, exported and imported again must reproduce its recorded
final eval loss to 1e-6.
"""

import json
import os

import numpy as np
import pytest

from tests.helpers import run_cli, run_cli_captured

T = 600
BASE = ["--config=configs/dense.py:tiny", "--config.model.dtype=float32"]
COMMON = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, intermediate_size=96, max_position_embeddings=640,
              rms_norm_eps=1e-5)
# name: (config class, its arguments over COMMON). GQA ratios 1, 2, 3 and 4; rope bases 1e4,
# 5e5 and 1e6; tied and untied; an 8-expert top-2 Mixtral; Qwen2-MoE with a shared expert and
# a dense layer; Qwen3 and Qwen3-MoE with QK-norm.
CONFIGS = {
    "llama_gqa1_tied_rope1e4": ("LlamaConfig", dict(num_key_value_heads=4, rope_theta=1e4,
                                                    tie_word_embeddings=True)),
    "llama_gqa2_untied_rope5e5": ("LlamaConfig", dict(rope_theta=5e5,
                                                      tie_word_embeddings=False)),
    "llama_gqa3_tied_rope5e5": ("LlamaConfig", dict(hidden_size=48, num_attention_heads=6,
                                                    rope_theta=5e5, tie_word_embeddings=True)),
    "mixtral_8x_top2": ("MixtralConfig", dict(num_local_experts=8, num_experts_per_tok=2,
                                              intermediate_size=32)),
    "qwen3_qknorm_gqa4_tied": ("Qwen3Config", dict(num_key_value_heads=1, head_dim=16,
                                                   rope_theta=1e6, tie_word_embeddings=True)),
    "qwen2moe_shared_sparse2": ("Qwen2MoeConfig", dict(
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        shared_expert_intermediate_size=64, decoder_sparse_step=2, norm_topk_prob=False)),
    "qwen3moe_qknorm": ("Qwen3MoeConfig", dict(num_experts=4, num_experts_per_tok=2,
                                               moe_intermediate_size=32, head_dim=16,
                                               norm_topk_prob=True)),
}


@pytest.fixture(scope="module")
def hf():
  """transformers (imported once per module: it takes seconds), offline."""
  os.environ["HF_HUB_OFFLINE"] = "1"
  import torch  # the dev extra pins both: a missing one is a broken install, not a skip
  import transformers
  torch.set_num_threads(1)
  return transformers, torch


def build(hf, name: str, seed: int = 0):
  """A random-init model of CONFIGS[name] in eval mode, with non-trivial norm weights (ones
  would hide a norm mapped to the wrong place) and the zero biases and shared-expert gate
  that scaling's Qwen2-MoE export writes."""
  transformers, torch = hf
  cls, kwargs = CONFIGS[name]
  config = getattr(transformers, cls)(**{**COMMON, **kwargs})
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config).float().eval()
  with torch.no_grad():
    for pname, p in model.named_parameters():
      if "norm" in pname:
        p.add_(0.2 * torch.randn_like(p))
      if pname.endswith("bias") or "shared_expert_gate" in pname:
        p.zero_()
  return model


def reference(hf, model, tokens):
  """transformers' logits [T-1, V] of tokens[:-1], as float64."""
  _, torch = hf
  with torch.no_grad():
    return model(torch.tensor(tokens[None, :-1].astype(np.int64))).logits[0].double().numpy()


def log_softmax(x):
  x = x.astype(np.float64)
  return x - np.logaddexp.reduce(x, axis=-1, keepdims=True)


def compare(ref_logits, nll, logits, tokens) -> dict:
  """max |delta NLL|, mean KL(transformers || ours) of the next-token distributions, and max
  |delta logit|."""
  ref_logp, ours_logp = log_softmax(ref_logits), log_softmax(logits)
  ref_nll = -np.take_along_axis(ref_logp, tokens[1:, None].astype(np.int64), -1)[:, 0]
  kl = np.sum(np.exp(ref_logp) * (ref_logp - ours_logp), axis=-1)
  return {"max_dnll": float(np.max(np.abs(nll - ref_nll))), "mean_kl": float(np.mean(kl)),
          "max_dlogit": float(np.max(np.abs(logits - ref_logits)))}


def score(capfd, run, tmp_path, tokens, tag="s"):
  np.save(tmp_path / f"{tag}-tokens.npy", tokens)
  code, err = run_cli(capfd, ["score", str(run), f"--tokens={tmp_path / f'{tag}-tokens.npy'}",
                              f"--out={tmp_path / f'{tag}-nll.npy'}",
                              f"--logits={tmp_path / f'{tag}-logits.npy'}"])
  assert code == 0, err
  return np.load(tmp_path / f"{tag}-nll.npy"), np.load(tmp_path / f"{tag}-logits.npy")


def tensors(folder):
  from scaling.hf import files

  f = files.Folder(folder)
  return {n: np.array(f.get(n)) for n in f.names()}


@pytest.mark.slow(seconds=6)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_import_score_export_match_transformers(hf, name, tmp_path, capfd):
  transformers, torch = hf
  model = build(hf, name)
  model.save_pretrained(tmp_path / "hf")
  tokens = np.random.default_rng(1).integers(0, 256, T + 1).astype(np.int32)
  code, err = run_cli(capfd, ["import", str(tmp_path / "hf"), f"--workdir={tmp_path / 'run'}",
                              "--notrain", *BASE])
  assert code == 0, err
  nll, logits = score(capfd, tmp_path / "run", tmp_path, tokens)
  assert nll.dtype == np.float32 and nll.shape == (T,)
  ref = reference(hf, model, tokens)
  got = compare(ref, nll, logits, tokens)
  with capfd.disabled():  # the measured numbers, for `pytest -s`
    print(f"parity {name}: {json.dumps(got)}")
  assert got["max_dnll"] <= 1e-4 and got["mean_kl"] <= 1e-6, got

  code, err = run_cli(capfd, ["export", str(tmp_path / "run"), f"--out={tmp_path / 'out'}"])
  assert code == 0, err
  source, back = tensors(tmp_path / "hf"), tensors(tmp_path / "out")
  assert sorted(back) == sorted(source)
  for k in source:
    assert back[k].dtype == source[k].dtype and back[k].tobytes() == source[k].tobytes(), k
  again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
  assert type(again) is type(model)
  np.testing.assert_array_equal(reference(hf, again, tokens), ref)


@pytest.mark.slow(seconds=15)
def test_trained_import_exports_and_reimports_to_its_eval_loss(hf, tmp_path, capfd):
  """`scaling import` trains from HF weights (the record names the source); the export of
  the trained run matches transformers; importing that export reproduces the run's recorded
  final eval loss."""
  transformers, _ = hf
  build(hf, "llama_gqa2_untied_rope5e5", seed=3).save_pretrained(tmp_path / "hf")
  train = [*BASE, "--config.train.steps=3", "--config.train.warmup_steps=1",
           "--config.train.global_batch=8", "--config.train.seq_len=32",
           "--config.train.eval_every=3", "--config.train.eval_batches=2",
           "--config.train.checkpoint_every=3", f"--config.data.data_dir={tmp_path / 'tfds'}",
           "--config.data.synthetic.train_tokens=16384",
           "--config.data.synthetic.validation_tokens=8192",
           "--config.data.synthetic.num_contexts=64"]
  code, err = run_cli(capfd, ["import", str(tmp_path / "hf"), f"--workdir={tmp_path / 'a'}",
                              *train])
  assert code == 0, err
  record = json.loads((tmp_path / "a" / "result.json").read_text())
  assert record["status"] == "complete" and record["steps_done"] == 3
  assert record["init_from"] == f"hf:{tmp_path / 'hf'}"

  code, err = run_cli(capfd, ["export", str(tmp_path / "a"), f"--out={tmp_path / 'e'}"])
  assert code == 0, err
  tokens = np.random.default_rng(2).integers(0, 256, T + 1).astype(np.int32)
  nll, logits = score(capfd, tmp_path / "a", tmp_path, tokens)
  exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "e").eval()
  got = compare(reference(hf, exported, tokens), nll, logits, tokens)
  with capfd.disabled():
    print(f"parity trained export: {json.dumps(got)}")
  assert got["max_dnll"] <= 1e-4 and got["mean_kl"] <= 1e-6, got
  assert not np.array_equal(tensors(tmp_path / "e")["lm_head.weight"],
                            tensors(tmp_path / "hf")["lm_head.weight"])  # it trained

  code, text, err = run_cli_captured(capfd, ["import", str(tmp_path / "e"),
                                             f"--workdir={tmp_path / 'b'}", "--notrain",
                                             "--eval", "--json", *train])
  assert code == 0, err
  out = json.loads(text)
  with capfd.disabled():
    print(f"eval loss: run {record['final_eval_loss']!r}, re-imported export "
          f"{out['eval_loss']!r}")
  assert abs(out["eval_loss"] - record["final_eval_loss"]) <= 1e-6


def test_export_writes_the_runs_sentencepiece_tokenizer(hf, tmp_path, capfd):
  """A run on sentencepiece text exports its tokenizer: transformers' ids equal the pipeline's,
  with <s> (the documents' start) first."""
  transformers, _ = hf
  from scaling.data.tokenizers import SentencePieceTokenizer
  from scaling.hf import arch
  from scaling.train import record
  from tests.hf.fakes import fake_hf, tiny_model

  rng = np.random.default_rng(0)
  words = ["the", "cat", "sat", "mat", "héllo", "wörld", "  two", "tab\tbed", "new\nline"]
  tok = SentencePieceTokenizer.train([" ".join(rng.choice(words, 12)) for _ in range(2000)],
                                     320)
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / "spm.model").write_bytes(tok.model_proto)
  fake_hf(tmp_path / "hf", tiny_model(vocab_size=320), arch.LLAMA)
  code, err = run_cli(capfd, ["import", str(tmp_path / "hf"), f"--workdir={tmp_path / 'run'}",
                              "--notrain"])
  assert code == 0, err
  record.write_result(tmp_path / "run", record.RunRecord(
      data={"spm_model": "spm.model", "data_path": str(tmp_path / "data")}))
  code, err = run_cli(capfd, ["export", str(tmp_path / "run"), f"--out={tmp_path / 'out'}"])
  assert code == 0, err
  assert (tmp_path / "out" / "tokenizer.model").read_bytes() == tok.model_proto
  assert json.loads((tmp_path / "out" / "config.json").read_text())["bos_token_id"] == 1
  theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
  for text in ["the cat sat", " leading space", "héllo wörld ✓🙂", "two  spaces\nand\ttab",
               "Zebra QQQ"]:
    assert theirs(text)["input_ids"] == [tok.bos_id, *tok.encode(text).tolist()], text
