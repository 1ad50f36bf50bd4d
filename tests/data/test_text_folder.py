"""The text-folder builder: byte and sentencepiece tokenisation, held-out tails, errors."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from scaling.data import builders, data_info, make_batches, pipeline
from scaling.data.tokenizers import ByteTokenizer, SentencePieceTokenizer
from scaling.errors import ScalingError

TEXTS = {
    "a.txt": "The quick brown fox jumps over the lazy dog.\n" * 40,
    "sub/b.txt": "Pack my box with five dozen liquor jugs.\n" * 60,
    "c.txt": "How vexingly quick daft zebras jump!\n\nSphinx of black quartz, judge my vow.\n" * 30,
}


@pytest.fixture()
def corpus(tmp_path) -> pathlib.Path:
  root = tmp_path / "corpus"
  for name, text in TEXTS.items():
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text)
  (root / "ignored.bin").write_bytes(b"\x00\x01")  # Does not match the default glob.
  return root


def cfg_for(path, data_dir, **changes):
  cfg = pipeline.default_config()
  cfg.name = "text_folder"
  cfg.data_dir = str(data_dir)
  cfg.text_folder.path = str(path)
  cfg.text_folder.update(changes)
  return cfg


def test_byte_tokenizer_round_trip_and_splits(corpus, tmp_path):
  info = data_info(cfg_for(corpus, tmp_path / "tfds"))
  assert info.vocab_size == 257 and info.entropy_floor is None
  sizes = [len(t.encode()) for t in TEXTS.values()]
  # Each file keeps its first 95% (plus one BOS) for training; the rest is held out.
  assert info.train_tokens == sum(int(n * 0.95) + 1 for n in sizes)
  assert info.metadata["validation_tokens"] == sum(n - int(n * 0.95) + 1 for n in sizes)
  src = make_batches(cfg_for(corpus, tmp_path / "tfds"), split="train", seq_len=32,
                     global_batch=4, seed=0)
  b = src[0]
  assert b["mask"].min() == 1.0 and b["inputs"].max() <= 256
  text = ByteTokenizer().decode(b["inputs"][0][b["inputs"][0] != 256])
  assert any(piece in text for piece in ("quick", "box", "zebras", "Sphinx", "jugs", "lazy"))


def test_sentencepiece_tokenizer(corpus, tmp_path):
  cfg = cfg_for(corpus, tmp_path / "tfds", tokenizer="sentencepiece", sp_vocab_size=400)
  info = data_info(cfg)
  assert 256 < info.vocab_size <= 400
  tok = SentencePieceTokenizer(pipeline.spm_model_path(info).read_bytes())
  assert tok.vocab_size == info.vocab_size
  builder = builders.ScalingTextFolder(config=builders.text_folder_config(
      builders.TextFolderSpec(path=str(corpus), tokenizer="sentencepiece", sp_vocab_size=400)),
      data_dir=str(tmp_path / "tfds"))
  source = builder.as_data_source("train")
  decoded = sorted(tok.decode(source[i]["tokens"][1:]) for i in range(len(source)))
  expected = sorted(t[:int(len(t) * 0.95)] for t in TEXTS.values())
  assert decoded == expected  # Lossless, newlines included.
  b = make_batches(cfg, split="validation", seq_len=16, global_batch=2, seed=0)[0]
  assert b["inputs"].max() < info.vocab_size


def test_changed_files_prepare_a_new_folder(corpus, tmp_path):
  first = data_info(cfg_for(corpus, tmp_path / "tfds")).metadata["data_path"]
  (corpus / "d.txt").write_text("A brand new document.\n" * 10)
  second = data_info(cfg_for(corpus, tmp_path / "tfds")).metadata["data_path"]
  assert first != second


def test_folder_errors(tmp_path):
  with pytest.raises(ScalingError, match="data.text_folder.path=.* is not a folder"):
    data_info(cfg_for(tmp_path / "missing", tmp_path / "tfds"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(ScalingError, match="no files matching data.text_folder.glob"):
    data_info(cfg_for(tmp_path / "empty", tmp_path / "tfds"))
  (tmp_path / "empty" / "a.txt").write_text("")
  with pytest.raises(ScalingError, match="empty"):
    data_info(cfg_for(tmp_path / "empty", tmp_path / "tfds"))
  with pytest.raises(ScalingError, match="data.text_folder.tokenizer='words'"):
    data_info(cfg_for(tmp_path / "empty", tmp_path / "tfds", tokenizer="words"))


def test_tokenizers_round_trip():
  text = "naïve café\n  two  spaces\n"
  tok = ByteTokenizer()
  ids = tok.encode(text)
  assert ids.dtype == np.uint16 and tok.decode(ids) == text
