"""Bits per byte: a loss comparable across tokenisers.

    bpb = (sum of the NLL of the evaluated tokens, nats) / ln 2 / (UTF-8 bytes they decode to)

The bytes are counted exactly from the evaluated target tokens, not from an average bytes per
token: each id decodes to a fixed number of bytes (`ByteTable`), except where a tokeniser's
decoding depends on position. Byte tokens are one byte each and BOS none. A sentencepiece piece
is its text with `▁` as a space (one byte each for byte-fallback pieces, none for control
pieces), and a piece that opens a document loses the one space its dummy prefix added
(sentencepiece prepends `▁` when encoding and drops it when decoding; a document is `[BOS] +
encode(text)`, so the piece after BOS carries it). Summed over a document this is exactly
`len(decode(ids).encode("utf-8"))`, which the tests check on text with multi-byte characters.
Document separators (BOS targets) add their nats and no bytes, under every tokeniser alike.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class ByteTable:
  """Bytes per token id.

  Attributes:
    lengths: int64 [V], UTF-8 bytes each id decodes to.
    prefix: bool [V], ids whose decoded text starts with the space a dummy prefix adds (one byte
      less when they open a document).
    bos_id: the document separator.
  """

  lengths: np.ndarray
  prefix: np.ndarray
  bos_id: int

  def count(self, inputs: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> int:
    """Bytes of the scored targets (`mask` > 0) of a batch: `inputs`, `targets` int [..., T]."""
    targets = np.asarray(targets)
    opens = (np.asarray(inputs) == self.bos_id) & self.prefix[targets]
    per = self.lengths[targets] - opens
    return int((per * (np.asarray(mask) > 0)).sum())


def byte_table(tokenizer, vocab_size: int | None = None) -> ByteTable:
  """The table of a `scaling.data.tokenizers` tokenizer (byte or sentencepiece), padded with
  zero-byte ids to `vocab_size` (the model's vocabulary may be larger than the tokeniser's)."""
  sp = getattr(tokenizer, "_sp", None)
  v = max(int(tokenizer.vocab_size), int(vocab_size or 0))
  lengths, prefix = np.zeros(v, np.int64), np.zeros(v, bool)
  if sp is None:  # bytes: ids 0..255 are one byte each
    lengths[:256] = 1
    return ByteTable(lengths, prefix, int(tokenizer.bos_id))
  dummy = "".join(sp.encode("x", out_type=str)).startswith("▁")
  for i in range(int(tokenizer.vocab_size)):
    if sp.is_byte(i):
      lengths[i] = 1
    elif not (sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i)):
      piece = sp.id_to_piece(i)
      lengths[i] = len(piece.replace("▁", " ").encode("utf-8"))
      prefix[i] = dummy and piece.startswith("▁")
  return ByteTable(lengths, prefix, int(tokenizer.bos_id))


def bits_per_byte(nats: float, num_bytes: int) -> float:
  """(nats / ln 2) / bytes; NaN without bytes."""
  return float(nats) / math.log(2.0) / num_bytes if num_bytes else math.nan


def run_tokenizer(info):
  """The tokenizer a text dataset was prepared with (`pipeline.DataInfo`): bytes, or the
  sentencepiece model stored beside the data."""
  from scaling.data.pipeline import spm_model_path
  from scaling.data.tokenizers import ByteTokenizer, SentencePieceTokenizer

  path = spm_model_path(info)
  if path is None:
    return ByteTokenizer()
  return SentencePieceTokenizer(path.read_bytes())
