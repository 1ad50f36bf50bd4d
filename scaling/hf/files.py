"""Safetensors folders without torch: a streaming writer and a memory-mapped reader.

The file format (safetensors, "Format" in its README): an unsigned little-endian 64-bit header
length N, N bytes of JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]},
"__metadata__": {str: str}}`, then the data buffer, the tensors contiguous in it (offsets relative
to its start). A checkpoint folder holds `model.safetensors`, or shards
`model-0000i-of-0000n.safetensors` beside `model.safetensors.index.json`
(`{"metadata": {"total_size"}, "weight_map": {name: file}}`), as transformers writes and reads
them.

The writer takes every tensor's name, shape and dtype first (the header comes before the data)
and asks for each tensor's values only when its turn comes, so a checkpoint is written with one
tensor in host memory at a time. The reader maps the files and returns read-only views.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from collections.abc import Callable, Sequence

import ml_dtypes
import numpy as np

from scaling.errors import ScalingError

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
MAX_SHARD_BYTES = 5 * 10**9  # transformers' shard size ("5GB")
DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
          "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
          "BOOL": np.bool_}
_CODES = {np.dtype(v): k for k, v in DTYPES.items()}


@dataclasses.dataclass(frozen=True)
class Spec:
  """One tensor to write: its name, shape and dtype."""

  name: str
  shape: tuple[int, ...]
  dtype: np.dtype

  @property
  def nbytes(self) -> int:
    return math.prod(self.shape) * np.dtype(self.dtype).itemsize


def dtype_code(dtype) -> str:
  """'F32' for float32, ...; ScalingError for a dtype safetensors cannot hold."""
  code = _CODES.get(np.dtype(dtype))
  if code is None:
    raise ScalingError(f"dtype {np.dtype(dtype)} cannot be written to safetensors")
  return code


def plan_shards(specs: Sequence[Spec], max_bytes: int) -> list[list[Spec]]:
  """Consecutive groups of `specs` of at most `max_bytes` each (a larger tensor alone)."""
  groups: list[list[Spec]] = [[]]
  size = 0
  for s in specs:
    if groups[-1] and size + s.nbytes > max_bytes:
      groups.append([])
      size = 0
    groups[-1].append(s)
    size += s.nbytes
  return groups


def _header(specs: Sequence[Spec]) -> bytes:
  head: dict = {"__metadata__": {"format": "pt"}}
  offset = 0
  for s in specs:
    head[s.name] = {"dtype": dtype_code(s.dtype), "shape": list(s.shape),
                    "data_offsets": [offset, offset + s.nbytes]}
    offset += s.nbytes
  text = json.dumps(head, separators=(",", ":")).encode()
  text += b" " * (-len(text) % 8)  # the data buffer starts 8-byte aligned
  return struct.pack("<Q", len(text)) + text


def _write_file(path: str, specs: Sequence[Spec], produce: Callable[[Spec], np.ndarray]) -> None:
  with open(path, "wb") as f:
    f.write(_header(specs))
    for s in specs:
      a = np.ascontiguousarray(produce(s))
      if a.shape != tuple(s.shape) or a.dtype != np.dtype(s.dtype):
        raise AssertionError(f"{s.name}: produced {a.dtype}{list(a.shape)}, planned "
                             f"{np.dtype(s.dtype)}{list(s.shape)}")
      f.write(a.reshape(-1).view(np.uint8).data)  # little-endian hosts: no copy
    f.flush()
    os.fsync(f.fileno())


def write_folder(folder: str | os.PathLike, specs: Sequence[Spec],
                 produce: Callable[[Spec], np.ndarray],
                 max_shard_bytes: int = MAX_SHARD_BYTES) -> list[str]:
  """Writes `specs` in order into `folder` (existing) as one file or shards plus the index;
  `produce(spec)` gives each tensor's values when it is written. Returns the file names."""
  groups = plan_shards(specs, max_shard_bytes)
  n = len(groups)
  names = [SINGLE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors"
                                    for i in range(n)]
  for name, group in zip(names, groups, strict=True):
    _write_file(os.path.join(folder, name), group, produce)
  if n > 1:
    index = {"metadata": {"total_size": sum(s.nbytes for s in specs)},
             "weight_map": {s.name: name for name, g in zip(names, groups, strict=True)
                            for s in g}}
    with open(os.path.join(folder, INDEX), "w") as f:
      json.dump(index, f, indent=2, sort_keys=True)
  return names


@dataclasses.dataclass(frozen=True)
class _Entry:
  file: str
  dtype: np.dtype
  shape: tuple[int, ...]
  start: int  # byte offset in the file
  nbytes: int


class Folder:
  """The tensors of a checkpoint folder (`model.safetensors` or an index with its shards),
  read lazily: `get(name)` is a read-only view of the mapped file."""

  def __init__(self, folder: str | os.PathLike):
    self.folder = os.fspath(folder)
    index_path = os.path.join(self.folder, INDEX)
    if os.path.exists(index_path):
      files = self._index_files(index_path)
    elif os.path.exists(os.path.join(self.folder, SINGLE)):
      files = [SINGLE]
    else:
      bins = [n for n in sorted(os.listdir(self.folder)) if n.endswith((".bin", ".pt", ".pth"))]
      hint = (f" (it has {bins[0]}: re-save it as safetensors, e.g. transformers' "
              "save_pretrained(..., safe_serialization=True))" if bins else "")
      raise ScalingError(f"{self.folder} has neither {SINGLE} nor {INDEX}{hint}")
    self.entries: dict[str, _Entry] = {}
    for name in files:
      self.entries.update(self._read_header(name))
    self._maps: dict[str, np.memmap] = {}

  def _index_files(self, index_path: str) -> list[str]:
    try:
      with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise ScalingError(f"{index_path} is not a safetensors index ({type(e).__name__}: {e}); "
                         "re-save the checkpoint") from None
    files = sorted(set(weight_map.values()))
    missing = [n for n in files if not os.path.exists(os.path.join(self.folder, n))]
    if missing:
      raise ScalingError(f"{self.folder} is partial: {INDEX} lists {missing[0]}, which is "
                         f"missing ({len(missing)} of {len(files)} shards missing); copy the "
                         "whole checkpoint folder")
    return files

  def _read_header(self, name: str) -> dict[str, _Entry]:
    path = os.path.join(self.folder, name)
    size = os.path.getsize(path)
    try:
      with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
          raise ValueError(f"header of {n} bytes in a file of {size}")
        head = json.loads(f.read(n))
    except (OSError, ValueError, struct.error) as e:
      raise ScalingError(f"{path} is not a safetensors file ({e}); re-save the checkpoint") \
          from None
    out = {}
    for key, v in head.items():
      if key == "__metadata__":
        continue
      if v["dtype"] not in DTYPES:
        raise ScalingError(f"{path}: tensor {key} has dtype {v['dtype']}, which this reader "
                           f"does not handle (it reads {', '.join(DTYPES)})")
      begin, end = v["data_offsets"]
      if 8 + n + end > size:
        raise ScalingError(f"{path} is truncated: tensor {key} ends at byte {8 + n + end} of "
                           f"{size}; copy the file again")
      out[key] = _Entry(name, np.dtype(DTYPES[v["dtype"]]), tuple(v["shape"]), 8 + n + begin,
                        end - begin)
    return out

  def names(self) -> list[str]:
    return sorted(self.entries)

  def shape(self, name: str) -> tuple[int, ...]:
    return self.entries[name].shape

  def get(self, name: str) -> np.ndarray:
    """The tensor `name` as a read-only array (mapped, read from disk on access)."""
    e = self.entries[name]
    if e.file not in self._maps:
      self._maps[e.file] = np.memmap(os.path.join(self.folder, e.file), mode="r")
    raw = self._maps[e.file][e.start:e.start + e.nbytes]
    return raw.view(e.dtype).reshape(e.shape)
