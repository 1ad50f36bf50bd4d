"""A Hugging Face checkpoint folder's weights as this project's parameters.

`check_folder` checks a folder's tensors against a model before anything is built: a missing or
partial folder, an unexpected or missing tensor, a shape (a vocab larger than the embedding) or
a non-zero tensor with no counterpart here (attention biases, Qwen2-MoE's shared-expert gate)
is one `ScalingError` naming it. `load_params` places the weights by the run's sharding rules:
each device's shard is read from the memory-mapped files by `jax.make_array_from_callback` into
the layout of the parameter it replaces (`scaling.hf.tensors.from_hf`).

`scaling.train.loop.restore` calls `initial_state` when a run with `model.init_from = "hf:DIR"`
starts with no checkpoint of its own.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np

from scaling.errors import ScalingError
from scaling.hf import arch, files
from scaling.hf.tensors import Tensor, from_hf, table

PREFIX = "hf:"
# Buffers some checkpoints carry that are computed, not learned (RoPE's inverse frequencies).
_DERIVED = ("rotary_emb.inv_freq",)


def leaf_path(keypath) -> tuple[str, ...]:
  """('blocks', 'attn', 'query', 'kernel') of a jax key path into an nnx State."""
  keys = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in keypath]
  return tuple(keys[:-1] if keys and keys[-1] == "value" else keys)


def read_hf_config(hf_dir: str) -> dict:
  """The parsed `HF_DIR/config.json`; ScalingError when the folder or the file is missing."""
  if not os.path.isdir(hf_dir):
    raise ScalingError(f"Hugging Face folder {hf_dir} does not exist; pass a folder with "
                       "config.json and model.safetensors (e.g. from save_pretrained)")
  path = os.path.join(hf_dir, "config.json")
  try:
    with open(path, encoding="utf-8") as f:
      hf = json.load(f)
  except FileNotFoundError:
    raise ScalingError(f"{hf_dir} has no config.json; it is partial or not a transformers "
                       "checkpoint folder") from None
  except (OSError, ValueError) as e:
    raise ScalingError(f"{path} cannot be read as JSON ({e}); copy it again") from None
  if not isinstance(hf, dict):
    raise ScalingError(f"{path} is not a JSON object; it is not a transformers config")
  return hf


def source_dir(m: ml_collections.ConfigDict) -> str:
  """The folder of `model.init_from` ("hf:DIR")."""
  spec = str(m.get("init_from") or "")
  if not spec.startswith(PREFIX) or not spec[len(PREFIX):]:
    raise ScalingError(f"model.init_from={spec!r}: expected hf:DIR, a Hugging Face checkpoint "
                       "folder")
  return spec[len(PREFIX):]


def hf_kind(hf: dict) -> str:
  """The tensor layout of HF config `hf`: Mistral's is Llama's."""
  kind = hf["model_type"]
  return arch.LLAMA if kind == arch.MISTRAL else kind


def _zero_feature(name: str) -> str:
  if "shared_expert_gate" in name:
    return "Qwen2-MoE's input-dependent shared-expert gate"
  return "an attention bias"


def check_folder(folder: files.Folder, m: ml_collections.ConfigDict, kind: str,
                 where: str) -> list[Tensor]:
  """The table of `m` as `kind`, after checking that `folder` holds exactly those tensors with
  their shapes; ScalingError naming the first problem."""
  tensors = table(m, kind)
  have = set(folder.names())
  missing = [t for t in tensors if t.name not in have and t.leaf is not None]
  if missing:
    fused = any(n.endswith("experts.gate_up_proj") for n in have)
    hint = (" (its experts are stored fused, experts.gate_up_proj: re-save it with "
            "transformers' save_pretrained, which writes one tensor per expert)" if fused
            else "")
    raise ScalingError(f"{where} is partial: it has no tensor {missing[0].name} "
                       f"({len(missing)} of {len(tensors)} expected tensors missing){hint}")
  for t in tensors:
    if t.name not in have:
      continue  # a zero tensor the folder leaves out (Qwen2-MoE with qkv_bias=false)
    shape = folder.shape(t.name)
    if shape != t.shape:
      if t.name == "model.embed_tokens.weight" and shape[1:] == t.shape[1:]:
        raise ScalingError(f"{where}: config.json vocab_size={m.vocab_size} but "
                           f"{t.name} has {shape[0]} rows; the vocab and the embedding must "
                           "agree")
      raise ScalingError(f"{where}: tensor {t.name} has shape {list(shape)}, but config.json "
                         f"makes it {list(t.shape)}")
    if t.leaf is None and np.any(folder.get(t.name)):
      raise ScalingError(f"{where}: tensor {t.name} is not zero: {_zero_feature(t.name)} has "
                         "no equivalent here")
  _check_extra(folder, tensors, have, m, where)
  return tensors


def _check_extra(folder, tensors, have, m, where) -> None:
  expected = {t.name for t in tensors}
  extra = sorted(n for n in have - expected if not n.endswith(_DERIVED))
  if m.tied_embeddings and "lm_head.weight" in extra:
    # Some tied checkpoints store the readout too: only a copy of the embedding is harmless.
    if not np.array_equal(folder.get("lm_head.weight"), folder.get("model.embed_tokens.weight")):
      raise ScalingError(f"{where}: tie_word_embeddings is true but lm_head.weight differs "
                         "from model.embed_tokens.weight; fix config.json")
    extra.remove("lm_head.weight")
  if extra:
    raise ScalingError(f"{where}: tensor {extra[0]} has no place in the model config.json "
                       f"describes ({len(extra)} unexpected tensors); it is another "
                       "architecture")


def load_params(cfg: ml_collections.ConfigDict, params, *, consume: bool = False,
                check_only: bool = False):
  """`params` (an nnx State of sharded arrays, or of ShapeDtypeStructs with shardings) with
  every leaf replaced by the weights of `model.init_from`, in the same shardings and dtypes.
  Each device's shard is read from the mapped files. `consume`: delete each old array once its
  replacement exists (peak device memory one leaf above the parameters); `check_only`: only
  check the folder against the model (ScalingError naming the problem)."""
  hf_dir = source_dir(cfg.model)
  folder = files.Folder(hf_dir)
  tensors = check_folder(folder, cfg.model, hf_kind(read_hf_config(hf_dir)), hf_dir)
  if check_only:
    return params
  by_leaf: dict[tuple, dict[tuple, Tensor]] = {}
  for t in tensors:
    if t.leaf is not None:
      by_leaf.setdefault(t.leaf, {})[t.index] = t

  def build(keypath, x: jax.Array) -> jax.Array:
    entries = by_leaf[leaf_path(keypath)]
    new = jax.make_array_from_callback(
        x.shape, x.sharding, lambda index: _shard(folder, entries, x.shape, x.dtype, index))
    if consume and isinstance(x, jax.Array):
      x.delete()
    return new

  return jax.tree_util.tree_map_with_path(build, params)


def _shard(folder: files.Folder, entries: Mapping[tuple, Tensor], shape: tuple[int, ...],
           dtype, index: tuple[slice, ...]) -> np.ndarray:
  """The block `index` of a leaf of `shape`, assembled from its HF tensors (one per leading
  index: layer unit, expert)."""
  lead = len(next(iter(entries)))
  index = tuple(index) + (slice(None),) * (len(shape) - len(index))
  ranges = [range(*index[d].indices(shape[d])) for d in range(lead)]
  pieces = []
  for combo in itertools.product(*ranges):
    t = entries[combo]
    full = from_hf(t, folder.get(t.name), shape[lead:])
    pieces.append(np.asarray(full[index[lead:]], dtype=dtype))
  block = np.stack(pieces) if lead else pieces[0]
  return block.reshape(*(len(r) for r in ranges), *pieces[0].shape)


def initial_state(cfg: ml_collections.ConfigDict, state: dict) -> dict:
  """The train state of a run starting from `model.init_from`: `state` (a fresh
  `Trainer.state`, consumed) with its parameters replaced by the imported weights.

  The optimizer state is kept: every optimizer of `scaling.train.optimizer` (AdamW, Adafactor,
  Lion) initialises from the parameters' shapes only (zero moments, zero counts).
  """
  return dict(state, params=load_params(cfg, state["params"], consume=True))


