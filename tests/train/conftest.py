"""A tiny, fast training config on a small synthetic dataset shared by the training tests."""

import pytest

from tests.helpers import load_config


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture
def tiny_cfg(data_dir):
  return make_tiny_cfg(data_dir)


def make_tiny_cfg(data_dir: str):
  """The tiny config of `tiny_cfg`, for fixtures of a wider scope."""
  cfg = load_config("configs/dense.py:tiny")
  cfg.model.update(num_layers=2, d_model=32, num_heads=4, num_kv_heads=4, d_ff=64,
                   vocab_size=256, max_len=64, dtype="float32")
  cfg.train.update(steps=12, global_batch=8, seq_len=64, warmup_steps=2, log_every=2,
                   eval_every=6, eval_batches=2, checkpoint_every=4, lr=1e-2)
  cfg.data.data_dir = data_dir
  cfg.data.synthetic.update(train_tokens=65536, validation_tokens=16384, num_contexts=256)
  return cfg
