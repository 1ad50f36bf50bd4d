"""The input pipeline: prepared TFDS data -> deterministic, per-host batches of packed windows.

Datasets (`data.name`):
* "synthetic" (default): the embedded Zipf-context language (`scaling.data.synthetic`), generated
  locally from `data.synthetic.*`; its exact entropy floor is `DataInfo.entropy_floor`.
* "text_folder": the text files under `data.text_folder.path`, byte- or sentencepiece-tokenised.
* any other name: a TFDS catalogue dataset (`lm1b`, `c4/en`, ...) read with
  `tfds.data_source`; its `data.text_field` is tokenised with the byte tokenizer. It must be
  prepared as array_record under `data.data_dir` (downloaded there when `data.download` is set).

Windows. For the embedded datasets every record of a split is concatenated, in stored order, into
one token stream, and window `i` is `stream[i * seq_len : i * seq_len + seq_len + 1]`
(consecutive windows share one token, so every token except the first is a target once):
`inputs = w[:-1]`, `targets = w[1:]`, both int32 [seq_len]. Catalogue datasets are too large to
hold in memory, so window `i` packs its records `i * r, i * r + 1, ...` (r = documents per
window, estimated from the first records) until full, padding with mask 0.

Mask (float32 [seq_len], 1 where a target counts). Text: 1 except padding. Synthetic: 1 exactly
on body tokens whose document marker is inside the window (see `synthetic.target_mask`); on
those targets the Bayes-optimal expected loss is `entropy_floor` nats, so the mean loss over
mask==1 targets is directly comparable with the floor. With `seq_len` a multiple of the document
length (32 tokens by default) every window starts at a document, and 29/32 of targets count.

Order. Windows are shuffled with `grain.MapDataset.shuffle`, which permutes each epoch with the
seed `base + epoch`, where `base` is derived from (seed, split); `repeat` makes the dataset
infinite and `batch(local_batch)` groups it. Step `s` of process `p` out of `P` is batch
`s * P + p`, so the global batch of step `s` is windows `[s * G, (s + 1) * G)` of the shuffled
order, the processes' local batches concatenate (in process order) to it, and any batch is a
pure function of (data, seed, step, process_index): a resumed run sees exactly the batches an
uninterrupted one would.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from scaling.data import builders, synthetic
from scaling.data.tokenizers import ByteTokenizer
from scaling.errors import ScalingError

SYNTHETIC = "synthetic"
TEXT_FOLDER = "text_folder"
_SPLIT_CODES = {"train": 0, "validation": 1}


def default_data_dir() -> str:
  """$SCALING_DATA_DIR, else ~/.cache/scaling/tfds."""
  return os.environ.get("SCALING_DATA_DIR") or os.path.expanduser("~/.cache/scaling/tfds")


def default_config() -> ml_collections.ConfigDict:
  """The `data` block of a run config, with every knob at its default."""
  cfg = ml_collections.ConfigDict()
  cfg.name = SYNTHETIC
  cfg.data_dir = ""  # "" -> $SCALING_DATA_DIR or ~/.cache/scaling/tfds.
  cfg.download = True  # Catalogue datasets only: download and prepare when missing.
  cfg.text_field = ""  # Catalogue datasets only: "" -> the "text" feature (or the only Text one).
  cfg.synthetic = ml_collections.ConfigDict(dataclasses.asdict(synthetic.SyntheticSpec()))
  cfg.text_folder = ml_collections.ConfigDict(dataclasses.asdict(builders.TextFolderSpec()))
  return cfg


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What the model and the run record need to know about a dataset.

  Attributes:
    vocab_size: tokens the model must embed (includes BOS and any other special token).
    entropy_floor: nats per scored (mask==1) target of the Bayes-optimal predictor; None when
      unknown (text).
    train_tokens: tokens in the train split after tokenisation; None when unknown.
    name: `data.name`.
    metadata: JSON-serialisable details for the run record (knobs, reference losses, paths).
  """

  vocab_size: int
  entropy_floor: float | None
  train_tokens: int | None
  name: str
  metadata: dict


# ------------------------------------------------------------------------------ config


def _get(cfg: Any, key: str, default: Any = None) -> Any:
  if cfg is None:
    return default
  if isinstance(cfg, dict):
    return cfg.get(key, default)
  return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


def _as_dict(cfg: Any) -> dict:
  if cfg is None:
    return {}
  if hasattr(cfg, "to_dict"):
    return cfg.to_dict()
  return dict(cfg)


def _spec_from(cfg: Any, field: str, cls):
  """Builds the dataclass `cls` from `data.<field>`, rejecting unknown keys by name."""
  values = _as_dict(_get(cfg, field))
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ScalingError(
        f"unknown key data.{field}.{unknown[0]}; known keys: {', '.join(sorted(known))}")
  try:
    typed = {k: type(getattr(cls(), k))(v) for k, v in values.items()}
  except (TypeError, ValueError) as e:
    raise ScalingError(f"data.{field}: bad value ({e})") from e
  spec = cls(**typed)
  spec.validate()
  return spec


def _data_dir(cfg: Any) -> str:
  return os.path.expanduser(str(_get(cfg, "data_dir", "") or default_data_dir()))


def _name(cfg: Any) -> str:
  name = str(_get(cfg, "name", SYNTHETIC) or "")
  if not name:
    raise ScalingError("data.name is empty; use 'synthetic', 'text_folder' or a TFDS dataset name")
  return name


# ------------------------------------------------------------------------------ datasets


@dataclasses.dataclass
class _Prepared:
  """A resolved dataset: how to read a split, and what to tell the run record."""

  info: DataInfo
  builder: tfds.core.DatasetBuilder
  mask_fn: Callable[[np.ndarray], np.ndarray] | None = None  # window [T+1] -> [T]; None = ones.
  train_mask_fn: Callable[[np.ndarray], np.ndarray] | None = None  # the train split's, if other
  min_seq_len: int = 1
  min_seq_len_reason: str = ""
  catalogue: bool = False
  text_field: str = ""
  splits: dict = dataclasses.field(default_factory=dict)


def _jsonable(metadata: Any) -> dict:
  return json.loads(json.dumps(dict(metadata), default=str))


def _builder_metadata(builder: tfds.core.DatasetBuilder) -> dict:
  return {"tfds_builder": builder.name, "tfds_config": builder.builder_config.name,
          "tfds_version": str(builder.version), "data_path": os.fspath(builder.data_path)}


@functools.lru_cache(maxsize=16)
def _prepare_synthetic(spec: synthetic.SyntheticSpec, data_dir: str) -> _Prepared:
  config = builders.synthetic_config(spec)
  builder = builders.prepare(
      lambda: builders.ScalingSynthetic(config=config, data_dir=data_dir))
  meta = _jsonable(builder.info.metadata)
  meta.update(_builder_metadata(builder))
  info = DataInfo(vocab_size=spec.vocab_size, entropy_floor=float(meta["entropy_floor"]),
                  train_tokens=int(meta["train_tokens"]), name=SYNTHETIC, metadata=meta)
  return _Prepared(
      info=info, builder=builder,
      # Without tasks both are `synthetic.target_mask`; with addition the train split also
      # scores the sums (synthetic.window_mask).
      mask_fn=functools.partial(synthetic.window_mask, spec=spec, split="validation"),
      train_mask_fn=functools.partial(synthetic.window_mask, spec=spec, split="train"),
      min_seq_len=spec.doc_length,
      min_seq_len_reason=(f"shorter than one synthetic document ({spec.doc_length} tokens), so "
                          "few or no targets would be scored; raise it or lower "
                          "data.synthetic.body_length"))


def _prepare_text_folder(spec: builders.TextFolderSpec, data_dir: str) -> _Prepared:
  # The config name hashes the knobs and the files' sizes and mtimes; scanning also raises the
  # errors for a missing folder or an empty corpus.
  return _prepare_text_folder_named(builders.text_folder_config(spec).name, spec, data_dir)


@functools.lru_cache(maxsize=16)
def _prepare_text_folder_named(config_name: str, spec: builders.TextFolderSpec,
                               data_dir: str) -> _Prepared:
  config = builders.text_folder_config(spec)
  builder = builders.prepare(
      lambda: builders.ScalingTextFolder(config=config, data_dir=data_dir))
  meta = _jsonable(builder.info.metadata)
  meta.update(_builder_metadata(builder))
  info = DataInfo(vocab_size=int(meta["vocab_size"]), entropy_floor=None,
                  train_tokens=int(meta["train_tokens"]), name=TEXT_FOLDER, metadata=meta)
  return _Prepared(info=info, builder=builder)


def _catalogue_builder(name: str, data_dir: str, download: bool) -> tfds.core.DatasetBuilder:
  def make() -> tfds.core.DatasetBuilder:
    return tfds.builder(name, data_dir=data_dir, file_format="array_record")

  try:
    builder = make()
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ScalingError(
        f"data.name={name!r} is not 'synthetic', 'text_folder' or a TFDS dataset this "
        "installation can load (unknown name, or its module needs packages that are missing); "
        "fix the name, e.g. data.name='lm1b'") from e
  except Exception as e:  # noqa: BLE001 - TFDS raises many types for a bad name or config.
    raise ScalingError(f"data.name={name!r}: TFDS cannot build it ({type(e).__name__}: {e}); "
                       "fix the name or its config (e.g. 'c4/en')") from e
  if builder.data_path.exists():
    return builder
  howto = (f"prepare it on a machine with internet (`tfds build {name} "
           f"--file_format=array_record --data_dir=DIR`) and copy DIR to data.data_dir, or use "
           "data.name='synthetic'")
  if not download:
    raise ScalingError(f"data.name={name!r} is not prepared under data.data_dir={data_dir!r} and "
                       f"data.download is False; set data.download=True, or {howto}")
  try:
    return builders.prepare(make)
  except Exception as e:  # noqa: BLE001 - network, missing TensorFlow/Beam, disk, ...
    raise ScalingError(
        f"data.name={name!r} could not be downloaded and prepared into data.data_dir="
        f"{data_dir!r} ({type(e).__name__}: {str(e)[:300]}); {howto}") from e


def _text_field(builder: tfds.core.DatasetBuilder, requested: str) -> str:
  features = builder.info.features
  keys = list(features.keys()) if hasattr(features, "keys") else []
  if requested:
    if requested not in keys:
      raise ScalingError(f"data.text_field={requested!r} is not a feature of {builder.name} "
                         f"(features: {', '.join(keys)}); pick one of them")
    return requested
  if "text" in keys:
    return "text"
  texts = [k for k in keys if isinstance(features[k], tfds.features.Text)]
  if len(texts) != 1:
    raise ScalingError(f"{builder.name} has no single text feature (features: {', '.join(keys)});"
                       " set data.text_field to the one to tokenise")
  return texts[0]


@functools.lru_cache(maxsize=16)
def _prepare_catalogue(name: str, data_dir: str, download: bool, text_field: str) -> _Prepared:
  builder = _catalogue_builder(name, data_dir, download)
  field = _text_field(builder, text_field)
  splits = {s: s for s in builder.info.splits}
  if "validation" not in splits and "test" in splits:
    splits["validation"] = "test"  # lm1b has no validation split; its test split is held out.
  meta = {"tfds_name": name, "text_field": field, "tokenizer": "byte",
          "split_map": splits, **_builder_metadata(builder)}
  info = DataInfo(vocab_size=ByteTokenizer.vocab_size, entropy_floor=None, train_tokens=None,
                  name=name, metadata=meta)
  return _Prepared(info=info, builder=builder, catalogue=True, text_field=field, splits=splits)


def _prepare(data_cfg: Any) -> _Prepared:
  name, data_dir = _name(data_cfg), _data_dir(data_cfg)
  if name == SYNTHETIC:
    return _prepare_synthetic(_spec_from(data_cfg, SYNTHETIC, synthetic.SyntheticSpec), data_dir)
  if name == TEXT_FOLDER:
    return _prepare_text_folder(_spec_from(data_cfg, TEXT_FOLDER, builders.TextFolderSpec),
                                data_dir)
  return _prepare_catalogue(name, data_dir, bool(_get(data_cfg, "download", True)),
                            str(_get(data_cfg, "text_field", "") or ""))


def data_info(data_cfg: ml_collections.ConfigDict) -> DataInfo:
  """Describes the dataset of `data_cfg` (`data.*`), preparing it first if needed."""
  return _prepare(data_cfg).info


# ------------------------------------------------------------------------------ windows


_STREAMS: dict[tuple[str, str], np.ndarray] = {}


def _load_stream(builder: tfds.core.DatasetBuilder, split: str) -> np.ndarray:
  """All tokens of a split, records concatenated in stored order: [num_tokens] (uint16/int32).

  Cached per (prepared folder, split), so train and eval sources share one copy per process.
  """
  key = (os.fspath(builder.data_path), split)
  if key not in _STREAMS:
    source = builder.as_data_source(split)
    parts = [source[i]["tokens"] for i in range(len(source))]
    if len(_STREAMS) >= 8:
      _STREAMS.pop(next(iter(_STREAMS)))
    _STREAMS[key] = np.concatenate(parts) if parts else np.zeros([0], np.int32)
  return _STREAMS[key]


class _StreamWindows:
  """Random-access windows of seq_len + 1 tokens over an in-memory token stream (grain source)."""

  def __init__(self, stream: np.ndarray, seq_len: int, mask_fn):
    self._stream, self._seq_len, self._mask_fn = stream, seq_len, mask_fn
    self._len = max(0, (stream.size - 1) // seq_len)

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    start = int(i) * self._seq_len
    w = self._stream[start:start + self._seq_len + 1].astype(np.int32)
    mask = (self._mask_fn(w) if self._mask_fn is not None
            else np.ones([self._seq_len], np.float32))
    return {"inputs": w[:-1], "targets": w[1:], "mask": mask}


class _PackedRecordWindows:
  """Windows packed from consecutive records of a large TFDS source (catalogue datasets).

  Window i concatenates `[BOS] + bytes(text)` of records i*r, i*r+1, ... until it has
  seq_len + 1 tokens (at most 4r + 4 records are read), then pads with mask 0. Records are not
  split across windows, so a document's tail beyond the window is dropped: a random-access
  approximation to packing, documented in the module docstring.
  """

  def __init__(self, source, text_field: str, seq_len: int):
    self._source, self._field, self._seq_len = source, text_field, seq_len
    self._tok = ByteTokenizer()
    probe = [self._tokens(i) for i in range(min(32, len(source)))]
    mean = float(np.mean([p.size for p in probe])) if probe else 1.0
    self.docs_per_window = max(1, int((seq_len + 1) // max(mean, 1.0)))
    self._len = len(source) // self.docs_per_window

  def _tokens(self, i: int) -> np.ndarray:
    text = self._source[i][self._field]
    return np.concatenate([[self._tok.bos_id], self._tok.encode(text)]).astype(np.int32)

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    need, parts, have = self._seq_len + 1, [], 0
    first = int(i) * self.docs_per_window
    for j in range(first, min(first + 4 * self.docs_per_window + 4, len(self._source))):
      parts.append(self._tokens(j))
      have += parts[-1].size
      if have >= need:
        break
    w = np.concatenate(parts)[:need]
    n = w.size
    w = np.pad(w, (0, need - n))
    mask = (np.arange(1, need) < n).astype(np.float32)
    return {"inputs": w[:-1], "targets": w[1:], "mask": mask}


# ------------------------------------------------------------------------------ batches


def _base_seed(seed: int, split: str) -> int:
  """A 32-bit shuffle seed from (seed, split); grain adds the epoch to it."""
  code = _SPLIT_CODES.get(split, 2 + sum(split.encode()))
  return int(np.random.SeedSequence([int(seed) % 2**63, code]).generate_state(1)[0])


class BatchSource:
  """Random-access per-host batches: `source[step]` is a pure function of (seed, step, process).

  Attributes:
    local_batch: windows per host per step (global_batch // process_count).
    seq_len: tokens per window, in inputs and targets.
    num_batches_per_epoch: global batches per pass over the split's windows (floor).
    num_windows: windows in one epoch.
  """

  def __init__(self, windows, *, split: str, seq_len: int, global_batch: int, seed: int,
               process_index: int, process_count: int):
    self.split, self.seq_len, self.seed = split, seq_len, seed
    self.global_batch, self.local_batch = global_batch, global_batch // process_count
    self.process_index, self.process_count = process_index, process_count
    self.num_windows = len(windows)
    self.num_batches_per_epoch = self.num_windows // global_batch
    self._dataset = (grain.MapDataset.source(windows)
                     .shuffle(seed=_base_seed(seed, split))
                     .repeat()
                     .batch(self.local_batch, drop_remainder=True))

  def __len__(self) -> int:
    return self.num_batches_per_epoch

  def __getitem__(self, step: int) -> dict[str, np.ndarray]:
    """Batch of `step`: inputs/targets int32 [local_batch, seq_len], mask float32 (same shape)."""
    step = int(step)
    if step < 0:
      raise IndexError(f"step must be >= 0, got {step}")
    return self._dataset[step * self.process_count + self.process_index]

  def iterate(self, start_step: int = 0, num_steps: int | None = None,
              prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
    """Batches of steps start_step, start_step + 1, ..., assembled `prefetch` steps ahead."""
    stop = None if num_steps is None else start_step + num_steps
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
      pending, step = [], start_step
      while True:
        while len(pending) < max(1, prefetch) and (stop is None or step < stop):
          pending.append(pool.submit(self.__getitem__, step))
          step += 1
        if not pending:
          return
        yield pending.pop(0).result()


def make_batches(data_cfg: ml_collections.ConfigDict, *, split: str, seq_len: int,
                 global_batch: int, seed: int, process_index: int = 0,
                 process_count: int = 1) -> BatchSource:
  """The batches of one split for one host (see the module docstring for order and masking).

  Args:
    data_cfg: the `data` block of the run config.
    split: "train" or "validation".
    seq_len: tokens per example, in inputs and in targets.
    global_batch: examples per step over all processes (must divide by process_count).
    seed: shuffle seed (the eval split should use a fixed one).
    process_index, process_count: this host and the number of hosts.
  """
  if split not in ("train", "validation"):
    raise ScalingError(f"split={split!r} is unknown; use 'train' or 'validation'")
  if seq_len < 1:
    raise ScalingError(f"train.seq_len={seq_len} must be a positive number of tokens")
  if global_batch < 1:
    raise ScalingError(f"train.global_batch={global_batch} must be positive")
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ScalingError(f"process_index={process_index} must be in [0, {process_count})")
  if global_batch % process_count:
    raise ScalingError(
        f"train.global_batch={global_batch} is not divisible by the {process_count} processes; "
        f"set train.global_batch to a multiple of {process_count}")
  prepared = _prepare(data_cfg)
  if seq_len < prepared.min_seq_len:
    raise ScalingError(f"train.seq_len={seq_len} is {prepared.min_seq_len_reason}")
  if prepared.catalogue:
    tfds_split = prepared.splits.get(split)
    if tfds_split is None:
      raise ScalingError(f"data.name={prepared.info.name!r} has no {split!r} split (splits: "
                         f"{', '.join(prepared.splits)}); choose another dataset")
    try:
      source = prepared.builder.as_data_source(tfds_split)
    except Exception as e:  # noqa: BLE001 - e.g. prepared as tfrecord, not array_record.
      raise ScalingError(
          f"data.name={prepared.info.name!r}: cannot read split {tfds_split!r} without "
          f"TensorFlow ({type(e).__name__}: {str(e)[:200]}); prepare it with "
          "--file_format=array_record") from e
    windows = _PackedRecordWindows(source, prepared.text_field, seq_len)
  else:
    stream = _load_stream(prepared.builder, split)
    mask_fn = prepared.train_mask_fn if split == "train" and prepared.train_mask_fn else \
        prepared.mask_fn
    windows = _StreamWindows(stream, seq_len, mask_fn)
  if len(windows) < global_batch:
    fix = ("data.synthetic.train_tokens/validation_tokens" if prepared.info.name == SYNTHETIC
           else "the amount of text")
    raise ScalingError(
        f"the {split} split of data.name={prepared.info.name!r} has {len(windows)} windows of "
        f"train.seq_len={seq_len}+1 tokens, fewer than train.global_batch={global_batch}: lower "
        f"the batch or seq_len, or raise {fix}")
  return BatchSource(windows, split=split, seq_len=seq_len, global_batch=global_batch, seed=seed,
                     process_index=process_index, process_count=process_count)


def spm_model_path(info: DataInfo) -> pathlib.Path | None:
  """The sentencepiece model of a text_folder dataset prepared with it, else None."""
  name = info.metadata.get("spm_model")
  return pathlib.Path(info.metadata["data_path"]) / name if name else None
