"""`scaling export`: a run's checkpoint as a Hugging Face folder that transformers loads as is.

The folder holds `config.json` (`scaling.hf.arch.hf_config`), `model.safetensors` (or shards of
at most 5 GB with their index) and, when the run's data was tokenised by a sentencepiece model,
that model as `tokenizer.model` with a `tokenizer_config.json`. The parameters are restored
sharded over the devices by the run's rules (`scaling.hf.runs.restore_params`) and each HF
tensor is gathered to the host only when the file writer reaches it (`scaling.hf.files`), so
the host holds one tensor at a time.

Every refusal (`scaling.hf.arch.export_type`) comes before anything is restored or written; the
folder is written beside `--out` and renamed into place when complete, so `--out` never holds a
partial export.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import jax
import numpy as np

from scaling import storage
from scaling.errors import ScalingError
from scaling.hf import arch, files, runs
from scaling.hf.tensors import Tensor, check_covers, table, to_hf
from scaling.train import record

TOKENIZER_CONFIG = {
    # The sentencepiece model of `scaling.data.tokenizers.SentencePieceTokenizer` (unigram,
    # byte fallback, identity normalisation): transformers' SentencePieceBackend runs the model
    # itself, so ids equal the pipeline's (its LlamaTokenizer would rebuild it as BPE). <unk>
    # is id 0 and <s> (`bos_id`) id 1, no end or padding piece; documents start with <s>.
    "tokenizer_class": "SentencePieceBackend", "legacy": True, "bos_token": "<s>",
    "unk_token": "<unk>", "special_tokens_pattern": "bos",
    "clean_up_tokenization_spaces": False,
}


def _check_out(out: str) -> str:
  if not storage.is_local(out):
    raise ScalingError(f"--out={out}: export writes a local folder; copy it to {out} after")
  out = os.path.abspath(out)
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ScalingError(f"--out={out} exists and is not an empty folder; choose a new path "
                       "(an export never overwrites anything)")
  return out


def tokenizer_model(run: runs.Run) -> str | None:
  """The sentencepiece model the run's data was tokenised with (from its run record), or
  None when its data has none (synthetic data, byte tokens)."""
  rec = record.read_result(run.workdir)
  data = (rec.data if rec is not None else None) or {}
  if not data.get("spm_model"):
    return None
  path = os.path.join(str(data.get("data_path", "")), str(data["spm_model"]))
  if not os.path.exists(path):
    raise ScalingError(f"the run's tokenizer {path} (result.json data.spm_model) is missing; "
                       "prepare the run's data again on this machine, then export")
  return path


def _take(slicer, leaf: jax.Array, index: tuple[int, ...]) -> np.ndarray:
  """`leaf[index]` gathered to the host: only that slice leaves the devices."""
  if index:
    leaf = slicer(leaf, *(np.int32(i) for i in index))
  return np.asarray(jax.device_get(leaf))


def export_run(workdir: str, out: str, *, step: int | None = None, mesh_flag: str | None = None,
               dropless: bool = False, max_shard_bytes: int = files.MAX_SHARD_BYTES) -> dict:
  """Writes run `workdir` at `step` (default: its newest) as an HF folder `out`; returns
  `{"out", "step", "architecture", "files", "tensors", "bytes", "tokenizer"}`."""
  runs.single_process("scaling export")
  run = runs.open_run(workdir)
  m = run.cfg.model
  kind = arch.export_type(m, dropless=dropless)
  out = _check_out(out)
  step = runs.pick_step(run, step)
  spm = tokenizer_model(run)
  config = arch.hf_config(m, kind, bos_id=1 if spm else None)
  mesh = runs.mesh_for(run.cfg, mesh_flag)
  _, params = runs.restore_params(run, step, mesh)
  leaves = runs.flat_leaves(params)
  tensors = table(m, kind)
  check_covers(tensors, {k: tuple(v.shape) for k, v in leaves.items()})
  by_name = {t.name: t for t in tensors}
  slicer = jax.jit(lambda x, *i: x[i])  # traced indices: one compile per leaf shape

  def dtype(t: Tensor):
    return np.dtype(leaves[t.leaf].dtype if t.leaf else m.param_dtype)

  def produce(spec: files.Spec) -> np.ndarray:
    t = by_name[spec.name]
    if t.leaf is None:
      return np.zeros(t.shape, spec.dtype)
    return to_hf(t, _take(slicer, leaves[t.leaf], t.index))

  specs = [files.Spec(t.name, t.shape, dtype(t)) for t in tensors]
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out)}.tmp-")
  try:
    names = files.write_folder(tmp, specs, produce, max_shard_bytes)
    storage.write_json(os.path.join(tmp, "config.json"), config)
    if spm:
      shutil.copyfile(spm, os.path.join(tmp, "tokenizer.model"))
      storage.write_json(os.path.join(tmp, "tokenizer_config.json"), TOKENIZER_CONFIG)
    with contextlib.suppress(FileNotFoundError):
      os.rmdir(out)  # an empty folder given as --out
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return {"out": out, "step": step, "architecture": arch.CLASSES[kind], "files": names,
          "tensors": len(specs), "bytes": sum(s.nbytes for s in specs),
          "tokenizer": bool(spm)}
