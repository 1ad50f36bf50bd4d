"""Fake Hugging Face folders for tests that need no torch: random weights in the layout of
`scaling.hf.tensors.table`, written by `scaling.hf.files`."""

import os

import numpy as np

from scaling import storage
from scaling.config import default_config
from scaling.hf import arch, files, tensors


def tiny_model(**changes):
  m = default_config().model
  m.update(num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, d_ff=48, vocab_size=64,
           max_len=128, dtype="float32", tied_embeddings=False)
  moe = changes.pop("moe", {})
  m.update(changes)
  m.moe.update(moe)
  return m


def fake_hf(path, m, kind: str, *, max_shard_bytes=files.MAX_SHARD_BYTES, edit=None, seed=0):
  """An HF folder for model `m` as `kind` with random weights (zeros where HF wants zeros)."""
  os.makedirs(path, exist_ok=True)
  rng = np.random.default_rng(seed)
  table = tensors.table(m, kind)
  values = {t.name: (np.zeros(t.shape, np.float32) if t.leaf is None
                     else rng.normal(0, 0.05, t.shape).astype(np.float32)) for t in table}
  config = arch.hf_config(m, kind)
  if edit:
    edit(config, values)
  specs = [files.Spec(k, v.shape, v.dtype) for k, v in values.items()]
  files.write_folder(path, specs, lambda s: values[s.name], max_shard_bytes)
  storage.write_json(os.path.join(path, "config.json"), config)
  return values
