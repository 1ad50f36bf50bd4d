"""Bits per byte: exact byte counts from decoded tokens, the same bpb for the same text under
byte and sentencepiece tokenisers, and `scaling eval` on a text run against a hand count."""

from __future__ import annotations

import math
import random

import jax
import numpy as np
import pytest

from scaling import storage
from scaling.config import default_config
from scaling.data.tokenizers import ByteTokenizer, SentencePieceTokenizer
from scaling.evals import bpb, records
from scaling.evals.run import evaluate
from scaling.parallel.mesh import make_mesh
from scaling.train import loop
from scaling.train.checkpoint import Checkpointer

WORDS = ["the", "cat", "sat", "on", "a", "mat", "naïve", "café", "日本語", "über", "🙂", "x",
         "\n"]
DOCS = ["hello wörld\n  two spaces\n", "\nstarts with a newline", " starts with a space 日本",
        "🙂🙂 emoji at the end 🙂", "zzqq ∑∫ characters the model never saw", "a"]


def _corpus(n: int, seed: int) -> list[str]:
  rng = random.Random(seed)
  return [" ".join(rng.choice(WORDS) for _ in range(14)) for _ in range(n)]


@pytest.fixture(scope="module")
def sp() -> SentencePieceTokenizer:
  return SentencePieceTokenizer.train(_corpus(300, 0), 320)


@pytest.mark.parametrize("kind", ["byte", "sentencepiece"])
def test_bytes_of_decoded_tokens_are_exact(kind, sp):
  tok = ByteTokenizer() if kind == "byte" else sp
  table = bpb.byte_table(tok)
  for doc in DOCS:
    ids = np.concatenate([[tok.bos_id], tok.encode(doc)])
    assert tok.decode(ids[1:]) == doc
    assert table.count(ids[:-1], ids[1:], np.ones(ids.size - 1)) == len(doc.encode("utf-8"))
  # Masked targets count nothing; the BOS of the next document counts no bytes.
  ids = np.concatenate([[tok.bos_id], tok.encode("ab"), [tok.bos_id], tok.encode("c")])
  assert table.count(ids[:-1], ids[1:], np.ones(ids.size - 1)) == 3
  assert table.count(ids[:-1], ids[1:], np.zeros(ids.size - 1)) == 0


def _byte_bigram(train_text: str):
  """A constructed model: add-one byte bigram, -log p(byte | previous byte) in nats."""
  counts = np.ones((257, 256))
  data = train_text.encode("utf-8")
  for a, b in zip(b"\x00" + data, data, strict=False):
    counts[a, b] += 1
  return -np.log(counts / counts.sum(1, keepdims=True))


def _spans(tok, doc: str) -> list[tuple[int, int]]:
  """Byte span of each token of `doc` in its UTF-8 text (sentencepiece's own offsets)."""
  if isinstance(tok, ByteTokenizer):
    return [(i, i + 1) for i in range(len(doc.encode("utf-8")))]
  return [(p.begin, p.end) for p in tok._sp.encode(doc, return_type="proto").pieces]  # noqa: SLF001


def _bpb_over_windows(tok, nll_bytes, docs: list[str], seq_len: int) -> float:
  """bpb of the constructed model over every window of the docs' token stream, the way the
  eval accumulates it: nats of the scored targets, bytes by `ByteTable.count`."""
  bos_nats = math.log(50.0)  # the separator costs the same under either tokeniser
  stream, nats = [], []
  for doc in docs:
    data = doc.encode("utf-8")
    per_byte = nll_bytes[np.frombuffer(b"\x00" + data[:-1], np.uint8), np.frombuffer(data,
                                                                                      np.uint8)]
    stream.append(tok.bos_id)
    nats.append(bos_nats)
    for (b, e), i in zip(_spans(tok, doc), tok.encode(doc), strict=True):
      stream.append(int(i))
      nats.append(float(per_byte[b:e].sum()))
  stream, nats = np.array(stream), np.array(nats)
  table = bpb.byte_table(tok)
  total, nbytes = 0.0, 0
  for start in range(0, stream.size - 1, seq_len):  # every target once; the last window short
    w = stream[start:start + seq_len + 1]
    total += nats[start + 1:start + w.size].sum()
    nbytes += table.count(w[:-1], w[1:], np.ones(w.size - 1))
  return bpb.bits_per_byte(total, nbytes)


def test_same_text_same_bpb_under_both_tokenisers(sp):
  model = _byte_bigram("\n".join(_corpus(200, 1)))
  docs = _corpus(20, 2) + DOCS
  by_bytes = _bpb_over_windows(ByteTokenizer(), model, docs, seq_len=64)
  by_pieces = _bpb_over_windows(sp, model, docs, seq_len=16)
  assert sum(len(sp.encode(d)) for d in docs) < 0.5 * sum(len(d.encode()) for d in docs)
  # The model's own bits per byte of the text, counted by hand.
  total = sum(float(model[np.frombuffer(b"\x00" + d.encode()[:-1], np.uint8),
                          np.frombuffer(d.encode(), np.uint8)].sum()) for d in docs)
  hand = (total + (len(docs) - 1) * math.log(50.0)) / math.log(2) / sum(
      len(d.encode()) for d in docs)
  assert by_bytes == pytest.approx(hand, rel=1e-12)
  assert by_pieces == pytest.approx(hand, rel=1e-12)
  assert 2.0 < hand < 6.0  # a bigram model of this text: far from 0 and from 8 bits


@pytest.mark.slow(seconds=8)
def test_eval_bpb_of_a_text_run_against_a_hand_count(tmp_path):
  rng = random.Random(3)
  texts = []
  for name in ("a.txt", "b.txt"):
    text = ""
    while len(text.encode()) < 2000:
      text += rng.choice(WORDS) + " "
    data = text.encode()[:2000]  # 2000 bytes; the cut may split a character (bytes are bytes)
    (tmp_path / "corpus").mkdir(exist_ok=True)
    (tmp_path / "corpus" / name).write_bytes(data)
    texts.append(data)
  cfg = default_config()
  cfg.data.update(name="text_folder", data_dir=str(tmp_path / "tfds"))
  cfg.data.text_folder.update(path=str(tmp_path / "corpus"), validation_fraction=0.1)
  cfg.model.update(num_layers=1, d_model=16, num_heads=2, num_kv_heads=2, d_ff=32,
                   vocab_size=257, max_len=50, dtype="float32")
  # 8 windows of 50 tokens: one epoch of the validation stream [BOS] v_a [BOS] v_b (402 tokens).
  cfg.train.update(global_batch=8, seq_len=50, eval_batches=1)
  run = tmp_path / "run"
  # A run folder as a run leaves it at its start: its config and the initial state, saved.
  cfg = loop.resolve_config(cfg)
  storage.write_json(run / "config.json", cfg.to_dict())
  one = jax.devices()[:1]
  trainer = loop.build_trainer(cfg, make_mesh(cfg.mesh, one))
  ckpt = Checkpointer(run, every=1, keep=1)
  ckpt.save(0, trainer.state, force=True)
  ckpt.close()
  evaluate(run, devices=one)
  got = {x["metric"]: x for x in records.read(run)}
  valid = [d[int(len(d) * 0.9):] for d in texts]  # the builder's cut: the last 10% of bytes
  stream = [256, *valid[0], 256, *valid[1]]
  targets = stream[1:8 * 50 + 1]
  hand_bytes = sum(t != 256 for t in targets)
  assert got["bpb"]["n"] == hand_bytes == 399 and got["nll"]["n"] == 400
  # The untrained model's loss is near log 257 nats per token: about 8 bits per byte.
  assert got["nll"]["value"] == pytest.approx(math.log(257), rel=0.02)
  assert got["bpb"]["value"] == pytest.approx(
      got["nll"]["value"] * 400 / math.log(2) / hand_bytes, rel=1e-9)
