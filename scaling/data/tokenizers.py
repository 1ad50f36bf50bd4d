"""Tokenizers for user text: bytes by default, or a sentencepiece model trained on the corpus.

Both reserve one id, `bos_id`, that starts every document; the pipeline concatenates documents
into one stream, so it doubles as the document separator.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np

from scaling.errors import ScalingError


class ByteTokenizer:
  """UTF-8 bytes as ids 0..255, plus `bos_id` = 256: `vocab_size` = 257."""

  vocab_size = 257
  bos_id = 256

  def encode(self, text: str | bytes) -> np.ndarray:
    """Token ids, uint16 [num_bytes]."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return np.frombuffer(data, dtype=np.uint8).astype(np.uint16)

  def decode(self, ids: Iterable[int]) -> str:
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


def _require_sentencepiece():
  try:
    import sentencepiece as spm  # noqa: PLC0415 (optional extra)
  except ImportError as e:
    raise ScalingError(
        "data.text_folder.tokenizer='sentencepiece' needs the sentencepiece package: "
        "pip install 'scaling[text]', or set data.text_folder.tokenizer='byte'") from e
  return spm


class SentencePieceTokenizer:
  """A sentencepiece model; id 0 is `<unk>`, id 1 (`bos_id`) starts documents."""

  bos_id = 1

  def __init__(self, model_proto: bytes):
    spm = _require_sentencepiece()
    self.model_proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.vocab_size = int(self._sp.get_piece_size())

  @classmethod
  def train(cls, lines: Iterable[str], vocab_size: int) -> SentencePieceTokenizer:
    """Trains a unigram model on `lines` with at most `vocab_size` pieces.

    Byte fallback (256 byte pieces) keeps every input encodable, so `vocab_size` must exceed
    256 plus the few special pieces. Newlines and repeated spaces survive (identity
    normalisation, "\\n" as a user-defined piece), so decode(encode(text)) == text.
    """
    spm = _require_sentencepiece()
    if vocab_size < 300:
      raise ScalingError(
          f"data.text_folder.sp_vocab_size={vocab_size} is too small: the sentencepiece model "
          "keeps 256 byte-fallback pieces, so use at least 300 (e.g. 1024)")
    out = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=iter(lines), model_writer=out, vocab_size=vocab_size,
          hard_vocab_limit=False, model_type="unigram", byte_fallback=True,
          normalization_rule_name="identity", remove_extra_whitespaces=False,
          user_defined_symbols=["\n"], unk_id=0, bos_id=cls.bos_id, eos_id=-1, pad_id=-1,
          input_sentence_size=2_000_000, shuffle_input_sentence=True, minloglevel=2,
          num_threads=2)
    except RuntimeError as e:
      raise ScalingError(
          f"sentencepiece training failed for data.text_folder.sp_vocab_size={vocab_size}: "
          f"{e}; lower sp_vocab_size or use data.text_folder.tokenizer='byte'") from e
    return cls(out.getvalue())

  def encode(self, text: str | bytes) -> np.ndarray:
    """Token ids, int32 [num_pieces]."""
    if isinstance(text, bytes):
      text = text.decode("utf-8", errors="replace")
    return np.asarray(self._sp.encode(text), dtype=np.int32)

  def decode(self, ids: Iterable[int]) -> str:
    return self._sp.decode([int(i) for i in ids])
