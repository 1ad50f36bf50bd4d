"""Orbax checkpoints of the train state: async saves, keep-last-n, fall back past a bad latest.

Orbax writes each step into a temporary folder and renames it when complete (on GCS, where
there is no rename, it marks completion with a commit file), so a save cut short by a kill never
looks finished. A finished checkpoint that fails to restore (disk damage,
a truncated copy) is skipped with a warning and the one before it is used.
"""

from __future__ import annotations

import logging
import os

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp
from orbax.checkpoint.checkpoint_managers import save_decision_policy as sdp

from scaling import storage

log = logging.getLogger(__name__)


class Checkpointer:
  """Saves and restores the train-state pytree under `workdir/checkpoints`."""

  def __init__(self, workdir: str | os.PathLike, *, every: int, keep: int,
               async_save: bool = True):
    # orbax writes gs:// itself (tensorstore); local paths must be absolute for it.
    workdir = storage.Path(os.path.abspath(workdir) if storage.is_local(workdir) else workdir)
    self.directory = workdir / "checkpoints"
    options = ocp.CheckpointManagerOptions(
        save_decision_policy=sdp.FixedIntervalPolicy(max(1, every)),
        preservation_policy=pp.LatestN(max(1, keep)),
        enable_async_checkpointing=async_save,
        cleanup_tmp_directories=True,
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def save(self, step: int, state, *, force: bool = False) -> bool:
    """Starts saving `state` at `step` when the policy (or `force`) says so."""
    return self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                             force=force)

  def restore_latest(self, target) -> tuple[int, object] | None:
    """(step, state) of the newest checkpoint that restores, or None when there is none.

    `target` is a pytree of arrays (or ShapeDtypeStructs) with the shardings to restore into.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        return step, restored["state"]
      except Exception as e:  # noqa: BLE001 - any failure means this checkpoint is unusable
        log.warning("checkpoint at step %d in %s could not be restored (%s: %s); trying the "
                    "previous one", step, self.directory, type(e).__name__, e)
    return None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
