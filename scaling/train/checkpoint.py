"""Orbax checkpoints of the train state: async saves, keep-last-n, fall back past an unreadable one.

Orbax writes each step into a temporary folder and renames it when complete (on GCS, where
there is no rename, it marks completion with a commit file), so a save cut short by a kill never
looks finished.

Restoring tells two failures apart, by the checkpoint's metadata (tree paths, shapes, dtypes)
read before any array is:
* a checkpoint that does not fit the model (another structure or shape) belongs to another run:
  `restore_latest` raises a one-line `ScalingError` and nothing is changed;
* a checkpoint that cannot be read (truncated, corrupt) is skipped with a warning and the one
  before it is used. It is kept as it is, never deleted (the retention policy preserves it and
  no save replaces it), so the damage can still be inspected.

Checking the metadata first also keeps a mismatch from reaching orbax's asynchronous restore,
which on a shape error returns while tensorstore reads are still in flight; their callbacks then
hit a closed event loop and print "RuntimeError: Event loop is closed" tracebacks.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp
from orbax.checkpoint.checkpoint_managers import save_decision_policy as sdp

from scaling import storage
from scaling.errors import ScalingError

log = logging.getLogger(__name__)
ITEM = "state"


@dataclasses.dataclass
class _KeepSteps(pp.PreservationPolicy):
  """Preserves the steps in `steps`, a set the Checkpointer fills as it finds unreadable ones."""

  steps: set[int]

  def should_preserve(self, checkpoints, *, context) -> list[bool]:
    return [c.step in self.steps for c in checkpoints]


def _key(k) -> str:
  for attr in ("key", "idx", "name"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def leaf_shapes(tree) -> dict[str, tuple[tuple[int, ...], str]]:
  """`{"params.blocks.attn.query.kernel": (shape, dtype)}` for every array (or metadata) leaf."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    keys = [_key(k) for k in path]
    if keys and keys[-1] == "value":  # nnx.Variable's own field: noise in a message
      keys = keys[:-1]
    out[".".join(keys)] = (tuple(int(d) for d in getattr(leaf, "shape", ())),
                           str(getattr(leaf, "dtype", "")))
  return out


def mismatches(saved: dict, wanted: dict) -> list[str]:
  """`"path saved -> wanted"` for each leaf whose presence, shape or dtype differs."""
  def fmt(x) -> str:
    return "(absent)" if x is None else f"{list(x[0])} {x[1]}"

  keys = sorted(set(saved) | set(wanted), key=lambda k: (not k.startswith("params"), k))
  return [f"{k} {fmt(saved.get(k))} -> {fmt(wanted.get(k))}" for k in keys
          if saved.get(k) != wanted.get(k)]


class Checkpointer:
  """Saves and restores the train-state pytree under `workdir/checkpoints`."""

  def __init__(self, workdir: str | os.PathLike, *, every: int, keep: int,
               async_save: bool = True):
    # orbax writes gs:// itself (tensorstore); local paths must be absolute for it.
    workdir = storage.Path(os.path.abspath(workdir) if storage.is_local(workdir) else workdir)
    self.workdir = workdir
    self.directory = workdir / "checkpoints"
    self.unreadable: set[int] = set()
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=sdp.FixedIntervalPolicy(max(1, every)),
        preservation_policy=pp.AnyPreservationPolicy(
            [pp.LatestN(max(1, keep)), _KeepSteps(self.unreadable)]),
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
    )
    # The handler is named so that metadata can be read without restoring (restore_latest).
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_handlers={ITEM: ocp.StandardCheckpointHandler()})

  def save(self, step: int, state, *, force: bool = False) -> bool:
    """Starts saving `state` at `step` when the policy (or `force`) says so."""
    if step in self.unreadable:
      log.warning("not saving step %d: the unreadable checkpoint of that step in %s is kept as "
                  "it is", step, self.directory)
      return False
    return self.manager.save(step, args=ocp.args.Composite(
        **{ITEM: ocp.args.StandardSave(state)}), force=force)

  def _saved_shapes(self, step: int) -> dict | None:
    try:
      meta = self.manager.item_metadata(step)[ITEM]
    except Exception as e:  # noqa: BLE001 - any failure to read metadata means unreadable
      self._skip(step, f"its metadata cannot be read: {type(e).__name__}: {e}")
      return None
    shapes = leaf_shapes(meta) if meta is not None else {}
    if not shapes:
      self._skip(step, "it has no readable metadata")
      return None
    return shapes

  def _skip(self, step: int, why: str) -> None:
    self.unreadable.add(step)
    log.warning("checkpoint at step %d in %s could not be restored (%s); keeping it and trying "
                "the previous one", step, self.directory, why.splitlines()[0][:300])

  def restore_latest(self, target) -> tuple[int, object] | None:
    """(step, state) of the newest checkpoint that restores, or None when there is none.

    `target` is a pytree of arrays (or ShapeDtypeStructs) with the shardings to restore into.
    Raises ScalingError when a checkpoint's structure or shapes differ from `target`'s.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    wanted = leaf_shapes(abstract)
    for step in sorted(self.manager.all_steps(), reverse=True):
      saved = self._saved_shapes(step)
      if saved is None:
        continue
      changes = mismatches(saved, wanted)
      if changes:
        named = ", ".join(changes[:3]) + (f", +{len(changes) - 3} more" if len(changes) > 3
                                          else "")
        raise ScalingError(f"{os.fspath(self.workdir)} holds another run: its checkpoint at step "
                           f"{step} does not fit this model ({named}); use a new --workdir")
      try:
        restored = self.manager.restore(
            step, args=ocp.args.Composite(**{ITEM: ocp.args.StandardRestore(abstract)}))
        return step, restored[ITEM]
      except Exception as e:  # noqa: BLE001 - a checkpoint that fits but fails is unreadable
        self._skip(step, f"{type(e).__name__}: {e}")
    return None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves, then releases orbax's threads (call it on every exit path)."""
    try:
      self.manager.wait_until_finished()
    finally:
      self.manager.close()
