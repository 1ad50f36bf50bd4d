"""A trained run's model: its config, its checkpoint steps, its parameters, its scores.

`open_run` reads `RUN_DIR/config.json` and the finished checkpoint steps; `restore_params`
restores only the parameters of one step (not the optimizer state) into the layout the run's
sharding rules give on the current devices (step 0 of an imported run, unless checkpointed, is
read from its Hugging Face folder); `token_scores` runs the model on one token sequence in
evaluation mode (eval capacity for MoE), as `scaling score` does.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from scaling import storage, xla_options
from scaling.config import validate_model
from scaling.errors import ScalingError
from scaling.hf.weights import leaf_path, load_params
from scaling.models.dense import abstract_model
from scaling.parallel.mesh import make_mesh, mesh_shape, parse_mesh_flag
from scaling.parallel.sharding import check_divisible, state_shardings
from scaling.train import checkpoint


@dataclasses.dataclass
class Run:
  """A run folder: its resolved config and its finished checkpoint steps (ascending)."""

  workdir: str
  cfg: ml_collections.ConfigDict
  steps: list[int]


def open_run(workdir: str | os.PathLike) -> Run:
  """The run in `workdir`; ScalingError when it is not a run folder."""
  workdir = os.fspath(workdir)
  if not storage.Path(workdir).is_dir():
    raise ScalingError(f"run folder {workdir} does not exist; pass a --workdir of "
                       "`scaling train` or `scaling import`")
  data = storage.read_json(storage.Path(workdir) / "config.json")
  if not isinstance(data, dict) or "model" not in data:
    raise ScalingError(f"{workdir} has no readable config.json, so it is not a run folder of "
                       "`scaling train` or `scaling import`")
  cfg = ml_collections.ConfigDict(data)
  validate_model(cfg.model)
  return Run(workdir, cfg, checkpoint.saved_steps(workdir))


def imported(run: Run) -> bool:
  """Whether the run started from a Hugging Face checkpoint: its step 0 is those weights."""
  return bool(run.cfg.model.get("init_from"))


def pick_step(run: Run, step: int | None) -> int:
  """`step`, or the newest one when None; ScalingError naming the steps there are. Step 0 of
  an imported run is its source's weights, checkpointed or not."""
  steps = sorted(set(run.steps) | ({0} if imported(run) else set()))
  if not steps:
    raise ScalingError(f"{run.workdir} has no finished checkpoint; train it first")
  if step is None:
    return steps[-1]
  if step not in steps:
    raise ScalingError(f"--step={step}: {run.workdir} has no checkpoint at that step; its "
                       f"steps are {', '.join(map(str, steps))}")
  return step


def mesh_for(cfg: ml_collections.ConfigDict, flag: str | None) -> jax.sharding.Mesh:
  """The run's mesh on this machine's devices, or the one `--mesh=data:8,...` names."""
  if not flag:
    return make_mesh(cfg.mesh)
  sizes = parse_mesh_flag(flag)
  mesh_shape(sizes, jax.device_count())  # one line when it does not fit the devices
  return make_mesh(sizes)


def replicated_batch(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`cfg` with the batch axis replicated: one sequence cannot split over data-parallel devices.
  Parameters keep their layout (no parameter carries the `batch` axis)."""
  out = ml_collections.ConfigDict(cfg.to_dict())
  out.mesh.rules.batch = ""
  return out


def flat_leaves(params) -> dict[tuple[str, ...], jax.Array]:
  return {leaf_path(kp): x for kp, x in jax.tree_util.tree_leaves_with_path(params)}


def abstract_params(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
  """(graphdef, params State of ShapeDtypeStructs with the shardings of the run's rules)."""
  graphdef, abstract = nnx.split(abstract_model(cfg))
  rules = dict(cfg.mesh.rules)
  check_divisible(abstract, dict(mesh.shape), rules)
  shardings = state_shardings(abstract, mesh, rules)
  target = jax.tree.map(
      lambda s, v: v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s)), shardings,
      abstract, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return graphdef, target


def restore_params(run: Run, step: int, mesh: jax.sharding.Mesh,
                   cfg: ml_collections.ConfigDict | None = None):
  """(graphdef, params) of `run` at `step`, sharded over `mesh` by the run's rules (`cfg`
  overrides the run's config, e.g. `replicated_batch`). The optimizer state is not read."""
  cfg = cfg or run.cfg
  graphdef, target = abstract_params(cfg, mesh)
  if step not in run.steps and step == 0 and imported(run):
    return graphdef, load_params(cfg, target)  # step 0 of an import: its source folder
  # orbax reads gs:// itself; local paths must be absolute for it (as `Checkpointer` does).
  workdir = os.path.abspath(run.workdir) if storage.is_local(run.workdir) else run.workdir
  directory = storage.Path(workdir) / "checkpoints"
  manager = ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False),
      item_handlers={checkpoint.ITEM: ocp.PyTreeCheckpointHandler()})
  try:
    meta = manager.item_metadata(step)[checkpoint.ITEM]
    tree = getattr(meta, "tree", meta)
    saved = checkpoint.leaf_shapes({"params": tree["params"]})
    changes = checkpoint.mismatches(saved, checkpoint.leaf_shapes({"params": target}))
    if changes:
      raise ScalingError(f"the checkpoint at step {step} in {directory} does not fit the "
                         f"model of its config.json ({', '.join(changes[:3])}); the folder is "
                         "damaged")
    item = {"params": target}
    args = ocp.args.PyTreeRestore(item=item, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(item))
    restored = manager.restore(step, args=ocp.args.Composite(**{checkpoint.ITEM: args}))
  finally:
    manager.close()
  return graphdef, restored[checkpoint.ITEM]["params"]


def single_process(command: str) -> None:
  """Scores and exports gather results to this host: one process only."""
  if jax.process_count() > 1:
    raise ScalingError(f"{command} runs in one process (this is {jax.process_count()}); run it "
                       "on one host with --mesh sized to its devices")


def check_tokens(tokens: np.ndarray, m: ml_collections.ConfigDict, where: str) -> np.ndarray:
  """`tokens` as int32 [T]; ScalingError naming what is wrong with them."""
  tokens = np.asarray(tokens)
  if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
    raise ScalingError(f"{where} holds {tokens.dtype}{list(tokens.shape)}; it must be one "
                       "sequence of integer token ids, shape [T]")
  if tokens.size < 2:
    raise ScalingError(f"{where} has {tokens.size} tokens; scoring needs at least 2")
  if tokens.size - 1 > m.max_len:
    raise ScalingError(f"{where} has {tokens.size} tokens: {tokens.size - 1} inputs exceed the "
                       f"model's context model.max_len={m.max_len}")
  bad = (tokens < 0) | (tokens >= m.vocab_size)
  if bad.any():
    i = int(np.argmax(bad))
    raise ScalingError(f"{where}: token {i} is {int(tokens[i])}, outside the model's vocab "
                       f"[0, {m.vocab_size})")
  return tokens.astype(np.int32)


def token_scores(graphdef, params, mesh: jax.sharding.Mesh, tokens: np.ndarray
                 ) -> tuple[jax.Array, jax.Array]:
  """(logits float32 [T-1, V], NLL float32 [T-1] nats) of `tokens` (int32 [T]): the model's
  next-token distributions at positions 0 .. T-2 (inputs `tokens[:-1]`, evaluation mode) and
  -log p(tokens[t+1]) under them."""
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def forward(p, x, y):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):  # MoE layers read the mesh
      logits = nnx.merge(graphdef, p)(x[None])[0]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return logits, -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]

  with jax.set_mesh(mesh):
    x, y = (jax.device_put(jnp.asarray(a), replicated) for a in (tokens[:-1], tokens[1:]))
    options = xla_options.for_platform(xla_options.STEPS, mesh)
    return jax.jit(forward, out_shardings=replicated, compiler_options=options)(params, x, y)


def score(workdir: str | os.PathLike, tokens: np.ndarray, *, step: int | None = None,
          mesh_flag: str | None = None, where: str = "tokens",
          return_logits: bool = False) -> Mapping:
  """`{"nll": float32 [T-1], "step", "logits"?}` of a token sequence under the run's model."""
  single_process("scaling score")
  run = open_run(workdir)
  tokens = check_tokens(tokens, run.cfg.model, where)
  step = pick_step(run, step)
  cfg = replicated_batch(run.cfg)
  mesh = mesh_for(cfg, mesh_flag)
  graphdef, params = restore_params(run, step, mesh, cfg)
  logits, nll = token_scores(graphdef, params, mesh, tokens)
  out = {"nll": np.asarray(nll, np.float32), "step": step}
  if return_logits:
    out["logits"] = np.asarray(logits)
  return out


def write_npy(path: str, array: np.ndarray) -> None:
  """Writes `array` to `path` atomically (`scaling.storage`)."""
  buf = io.BytesIO()
  np.save(buf, array)
  storage.write_bytes(path, buf.getvalue())
