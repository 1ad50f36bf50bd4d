"""`scaling import`: a Hugging Face checkpoint as the starting point of a run.

`import_config` builds the run config: the architecture fields of `model` from the folder's
`config.json` (`scaling.hf.arch.model_fields`) over a base config (training, data, mesh, compute
dtype), and `model.init_from = "hf:DIR"`, after checking the folder's tensors
(`scaling.hf.weights.check_folder`). `train()` then starts from those weights
(`scaling.train.loop.restore` calls `weights.initial_state`) and resumes like any run;
`prepare` writes a run folder whose step 0 is the imported weights, without training or copying
them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import jax
import ml_collections

from scaling import storage
from scaling.config import default_config, validate_model
from scaling.errors import ScalingError
from scaling.hf import arch, files, runs
from scaling.hf.weights import (
    PREFIX,
    check_folder,
    hf_kind,
    initial_state,
    load_params,
    read_hf_config,
)


def import_config(hf_dir: str, base: ml_collections.ConfigDict | None = None, *,
                  overridden: Iterable[str] = ()) -> ml_collections.ConfigDict:
  """The run config that starts from HF folder `hf_dir`: `base` (default `default_config()`)
  with the folder's architecture and `model.init_from`. Checks the folder's tensors.
  `overridden`: the `model.*` fields the user set (`moe.top_k`); one that the folder fixes is
  refused rather than silently replaced."""
  hf_dir = os.path.abspath(hf_dir)
  hf = read_hf_config(hf_dir)
  fields = arch.model_fields(hf, os.path.join(hf_dir, "config.json"))
  fixed = set(arch.flat(fields)) - {"name", "init_std"}  # labels the user may set
  for key in overridden:
    if key in fixed:
      raise ScalingError(f"--config.model.{key}: model.{key} comes from {hf_dir}/config.json "
                         f"({arch.flat(fields)[key]!r}); drop the flag")
    fields.pop(key, None)  # a label (name, init_std) the user chose stays
  cfg = ml_collections.ConfigDict((base or default_config()).to_dict())
  moe = fields.pop("moe")
  cfg.model.update(fields)
  cfg.model.moe.update(moe)
  cfg.model.init_from = PREFIX + hf_dir
  if cfg.model.get("parametrization", "sp") != "sp":
    raise ScalingError(f"model.parametrization={cfg.model.parametrization!r}: weights from "
                       f"{hf_dir} compute the standard parametrization; drop the override")
  validate_model(cfg.model)
  check_folder(files.Folder(hf_dir), cfg.model, hf_kind(hf), hf_dir)
  _check_tokenizer(hf_dir, cfg.model.vocab_size)
  return cfg


def _check_tokenizer(hf_dir: str, vocab: int) -> None:
  """A `tokenizer.json` whose ids reach past the embedding is refused."""
  path = os.path.join(hf_dir, "tokenizer.json")
  try:
    with open(path, encoding="utf-8") as f:
      tok = json.load(f)
  except (OSError, ValueError):
    return
  ids = [int(t["id"]) for t in tok.get("added_tokens") or [] if "id" in t]
  table_ = (tok.get("model") or {}).get("vocab")
  size = len(table_) if isinstance(table_, (dict, list)) else 0
  top = max([size - 1, *ids]) + 1
  if top > vocab:
    raise ScalingError(f"{path} has {top} token ids but config.json vocab_size={vocab}: the "
                       "tokenizer's vocab is larger than the embedding; use the checkpoint's "
                       "own tokenizer")


def prepare(cfg: ml_collections.ConfigDict, workdir: str, *, evaluate: bool = False) -> dict:
  """Writes run folder `workdir` (config.json, identity.json) without training: its step 0 is
  the weights of `model.init_from`, read from there by `scaling score` and `scaling export`
  (no copy is written) and by `train` when it starts. `evaluate`: also the held-out loss of its
  newest step on the config's data (nats per token, as `train` evaluates)."""
  from scaling.data import data_info
  from scaling.parallel.mesh import make_mesh
  from scaling.train import identity, loop
  from scaling.train.checkpoint import saved_steps

  path = storage.Path(workdir)
  storage.check_workdir(path)
  cfg = loop.resolve_config(cfg)
  identity.check(path, cfg)  # a workdir of another run is refused before anything is written
  mesh = make_mesh(cfg.mesh)
  if evaluate:
    loop.check_run_config(cfg, dict(mesh.shape), data_info(cfg.data).vocab_size)
  steps = saved_steps(path)
  if not steps:
    load_params(cfg, runs.abstract_params(cfg, mesh)[1], check_only=True)
    if jax.process_index() == 0:  # what `loop.restore` records on a fresh start
      path.mkdir(parents=True, exist_ok=True)
      storage.write_json(path / "config.json", cfg.to_dict())
      identity.write(path, cfg)
  loss = held_out_loss(cfg, path, mesh) if evaluate else None
  return {"workdir": os.fspath(workdir), "step": max(steps or [0]), "eval_loss": loss,
          "init_from": cfg.model.init_from}


def held_out_loss(cfg: ml_collections.ConfigDict, workdir, mesh: jax.sharding.Mesh) -> float:
  """Mean held-out NLL (nats per token) of the newest checkpoint in `workdir` (or of the
  imported weights when it has none), computed as `train` computes its eval loss
  (`loop.Inputs.evaluate`: the same batches, the same step function)."""
  from scaling.train import loop
  from scaling.train.checkpoint import Checkpointer

  trainer = loop.build_trainer(cfg, mesh)
  ckpt = Checkpointer(workdir, every=1, keep=1, read_only=True)
  try:
    restored = ckpt.restore_latest(trainer.state)
  finally:
    ckpt.close()
  state = restored[1] if restored else initial_state(cfg, trainer.state)
  with jax.set_mesh(mesh):
    return loop.Inputs(cfg, trainer).evaluate(state["params"])
