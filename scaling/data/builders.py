"""TFDS builders for the embedded datasets, written as array_record and read without TensorFlow.

* `ScalingSynthetic` ("scaling_synthetic"): the synthetic language of `scaling.data.synthetic`.
* `ScalingTextFolder` ("scaling_text_folder"): a local folder of text files, tokenised with bytes
  or with a sentencepiece model trained on the folder's training part.

Every knob that changes the data goes into the builder config's name (a readable prefix and a
hash), so `data_dir/<builder>/<config>/<version>/` never holds data made with other knobs.
Preparation goes through `prepare`, which holds a file lock while TFDS writes to a temporary
folder and renames it, so two processes preparing the same data at once do not collide.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import os
import pathlib
from collections.abc import Callable

import numpy as np
import tensorflow_datasets as tfds
from absl import logging as absl_logging
from etils import epath

from scaling.data import synthetic
from scaling.data.tokenizers import ByteTokenizer, SentencePieceTokenizer
from scaling.errors import ScalingError

# Long documents are stored in pieces of at most this many tokens (array_record records should
# stay small); the pipeline concatenates records, so the split is invisible downstream.
MAX_RECORD_TOKENS = 1 << 20
SPM_FILENAME = "spm.model"


@contextlib.contextmanager
def _file_lock(path: pathlib.Path):
  """An exclusive advisory lock on `path` (POSIX flock); a no-op where flock is unavailable."""
  try:
    import fcntl  # noqa: PLC0415 (POSIX only)
  except ImportError:  # pragma: no cover - Windows
    yield
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "a+") as f:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_tfds():
  """Hides TFDS's per-construction "Using custom data configuration" warning and progress bars."""
  from tensorflow_datasets.core.utils import tqdm_utils  # noqa: PLC0415

  verbosity, bars = absl_logging.get_verbosity(), tqdm_utils._active  # noqa: SLF001
  absl_logging.set_verbosity(absl_logging.ERROR)
  tfds.display_progress_bar(False)
  try:
    yield
  finally:
    absl_logging.set_verbosity(verbosity)
    tfds.display_progress_bar(bars)


def prepare(make_builder: Callable[[], tfds.core.DatasetBuilder]) -> tfds.core.DatasetBuilder:
  """Returns a prepared builder, generating its data first if needed.

  TFDS writes into `incomplete.*` and renames it into place, but a second process that finished
  generating later would fail on the rename; the lock serialises preparation and the builder is
  re-created after it is acquired so it sees data another process just wrote.
  """
  with _quiet_tfds():
    builder = make_builder()
    if builder.data_path.exists():
      return builder
    data_dir = str(builder.data_dir_root)
    if "://" in data_dir:  # Remote file systems (gs://...): no flock; rely on TFDS alone.
      builder.download_and_prepare(file_format="array_record")
      return make_builder()
    name = f"{builder.name}-{builder.builder_config.name if builder.builder_config else ''}"
    with _file_lock(pathlib.Path(data_dir) / ".locks" / f"{name.replace('/', '_')}.lock"):
      builder = make_builder()
      if not builder.data_path.exists():
        builder.download_and_prepare(file_format="array_record")
        builder = make_builder()  # Re-read the written DatasetInfo (splits, metadata).
    return builder


class _PackageBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the builders in this package."""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10 resolves this for builders defined in a package through `importlib_resources`
    # (a Python < 3.9 backport it no longer installs) and fails; our builders ship no
    # checksums or metadata files beside them, so the module file itself is all it needs.
    return epath.Path(inspect.getfile(cls))


def _token_features(dtype) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({"tokens": tfds.features.Tensor(shape=(None,), dtype=dtype)})


# ------------------------------------------------------------------------------ synthetic


@dataclasses.dataclass(eq=False)
class SyntheticConfig(tfds.core.BuilderConfig):
  spec: synthetic.SyntheticSpec = dataclasses.field(default_factory=synthetic.SyntheticSpec)


def synthetic_config(spec: synthetic.SyntheticSpec) -> SyntheticConfig:
  """The builder config of `spec`, named `v<V>-k<K>-s<seed>-<hash of all knobs>`."""
  name = f"v{spec.vocab_size}-k{spec.num_contexts}-s{spec.seed}-{spec.fingerprint()}"
  return SyntheticConfig(name=name, spec=spec, description=json.dumps(spec.to_json()))


class ScalingSynthetic(_PackageBuilder):
  """The synthetic Zipf-context language; records are blocks of whole documents."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  # Configs are made per knob set by `synthetic_config`; this one only serves TFDS's registry.
  BUILDER_CONFIGS = [SyntheticConfig(name="default")]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Synthetic Zipf-context language with an exact entropy floor.",
        features=_token_features(np.uint16),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,  # Records stay in generation order: reproducible streams.
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    lang = synthetic.SyntheticLanguage(self.builder_config.spec)
    # Stored beside the data (metadata.json) so the floor travels with the prepared dataset.
    self.info.metadata.update(lang.summary())
    self.info.metadata["train_tokens"] = lang.split_num_docs("train") * lang.spec.doc_length
    return {split: self._generate_examples(lang, split) for split in ("train", "validation")}

  def _generate_examples(self, lang: synthetic.SyntheticLanguage, split: str):
    for r, tokens in lang.generate_split(split):
      yield r, {"tokens": tokens.astype(np.uint16)}


# ------------------------------------------------------------------------------ text folder


@dataclasses.dataclass(frozen=True)
class TextFolderSpec:
  """Knobs of the text-folder dataset (`data.text_folder.*` in the config)."""

  path: str = ""
  tokenizer: str = "byte"
  sp_vocab_size: int = 1024
  glob: str = "**/*.txt"
  validation_fraction: float = 0.05

  def validate(self) -> None:
    f = "data.text_folder."
    if not self.path:
      raise ScalingError(f"{f}path is not set: point it at a folder of text files")
    if self.tokenizer not in ("byte", "sentencepiece"):
      raise ScalingError(
          f"{f}tokenizer={self.tokenizer!r} is unknown; choose 'byte' or 'sentencepiece'")
    if not 0.0 < self.validation_fraction < 1.0:
      raise ScalingError(
          f"{f}validation_fraction={self.validation_fraction} must be in (0, 1), e.g. 0.05")


def scan_text_folder(spec: TextFolderSpec) -> list[pathlib.Path]:
  """The corpus files, sorted; raises `ScalingError` for a missing folder or an empty corpus."""
  spec.validate()
  root = pathlib.Path(spec.path).expanduser()
  if not root.is_dir():
    raise ScalingError(
        f"data.text_folder.path={spec.path!r} is not a folder; point it at a folder of text files")
  files = sorted(p for p in root.glob(spec.glob) if p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(root).parts))
  if not files:
    raise ScalingError(
        f"data.text_folder.path={spec.path!r} has no files matching data.text_folder.glob="
        f"{spec.glob!r}; add text files or change the glob")
  if sum(p.stat().st_size for p in files) == 0:
    raise ScalingError(f"data.text_folder.path={spec.path!r}: all {len(files)} matching files are "
                       "empty; add some text")
  return files


@dataclasses.dataclass(eq=False)
class TextFolderConfig(tfds.core.BuilderConfig):
  spec: TextFolderSpec = dataclasses.field(default_factory=TextFolderSpec)


def text_folder_config(spec: TextFolderSpec) -> TextFolderConfig:
  """The builder config of `spec`; its name hashes the knobs and every file's size and mtime."""
  files = scan_text_folder(spec)
  root = pathlib.Path(spec.path).expanduser().resolve()
  stats = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
  payload = json.dumps({"spec": dataclasses.asdict(spec), "root": str(root), "files": stats},
                       sort_keys=True)
  digest = hashlib.sha256(payload.encode()).hexdigest()[:12]
  tok = "byte" if spec.tokenizer == "byte" else f"sp{spec.sp_vocab_size}"
  return TextFolderConfig(name=f"{tok}-{digest}", spec=spec,
                          description=f"Text files under {root} ({len(files)} files)")


def _split_document(data: bytes, fraction: float, by_chars: bool) -> tuple:
  """Cuts one file into (train, validation) parts: the last `fraction` goes to validation."""
  if by_chars:
    text = data.decode("utf-8", errors="replace")
    cut = int(len(text) * (1.0 - fraction))
    return text[:cut], text[cut:]
  cut = int(len(data) * (1.0 - fraction))
  return data[:cut], data[cut:]


class ScalingTextFolder(_PackageBuilder):
  """A local folder of text files; each file's tail (validation_fraction) is held out."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [TextFolderConfig(name="unset")]

  def _info(self) -> tfds.core.DatasetInfo:
    spec = self.builder_config.spec
    small = spec.tokenizer == "byte" or spec.sp_vocab_size <= 65535
    return tfds.core.DatasetInfo(
        builder=self,
        description="Local text files, tokenised at preparation time.",
        features=_token_features(np.uint16 if small else np.int32),
        metadata=tfds.core.MetadataDict(),
        disable_shuffling=True,  # Keeps the pieces of a long file in order in the stream.
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    spec = self.builder_config.spec
    files = scan_text_folder(spec)
    by_chars = spec.tokenizer == "sentencepiece"
    parts = [_split_document(p.read_bytes(), spec.validation_fraction, by_chars) for p in files]
    if spec.tokenizer == "byte":
      tok = ByteTokenizer()
    else:
      lines = (line for train, _ in parts for line in train.split("\n") if line.strip())
      tok = SentencePieceTokenizer.train(lines, spec.sp_vocab_size)
      # self.data_path is TFDS's temporary folder here, so the model is renamed with the data.
      (self.data_path / SPM_FILENAME).write_bytes(tok.model_proto)
    docs = {"train": [], "validation": []}
    for train, valid in parts:
      for split, text in (("train", train), ("validation", valid)):
        if len(text):
          docs[split].append(np.concatenate([[tok.bos_id], tok.encode(text)]))
    for split, d in docs.items():
      if not d:
        raise ScalingError(
            f"data.text_folder.path={spec.path!r} is too small to hold out a {split} split with "
            f"validation_fraction={spec.validation_fraction}; add text or raise the fraction")
    self.info.metadata.update({
        "tokenizer": spec.tokenizer, "vocab_size": tok.vocab_size, "bos_id": tok.bos_id,
        "num_files": len(files), "path": os.fspath(pathlib.Path(spec.path).expanduser().resolve()),
        "train_tokens": int(sum(d.size for d in docs["train"])),
        "validation_tokens": int(sum(d.size for d in docs["validation"])),
        "spm_model": SPM_FILENAME if spec.tokenizer == "sentencepiece" else None,
    })
    dtype = self.info.features["tokens"].np_dtype
    return {split: self._generate_examples(d, dtype) for split, d in docs.items()}

  def _generate_examples(self, docs: list[np.ndarray], dtype):
    for i, doc in enumerate(docs):
      for j, start in enumerate(range(0, doc.size, MAX_RECORD_TOKENS)):
        yield f"{i:08d}-{j:05d}", {"tokens": doc[start:start + MAX_RECORD_TOKENS].astype(dtype)}
