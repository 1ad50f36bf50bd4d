"""The run record (`result.json`): its name, reader and the provenance it carries.

Writes go through `scaling.storage` (atomic, local or `gs://`).

`result.json` is the contract between training and fitting: counts from
`scaling.accounting`, tokens D, FLOPs C with the method named, losses, time, hardware, versions.
"""

from __future__ import annotations

import importlib.metadata
import platform

import jax

from scaling import storage

RESULT = "result.json"
METRICS = "metrics.jsonl"


def read_result(workdir) -> dict | None:
  return storage.read_json(storage.Path(workdir) / RESULT)


def versions() -> dict[str, str]:
  out = {"python": platform.python_version()}
  for dist in ("scaling", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
               "tensorflow-datasets", "ml-collections"):
    try:
      out[dist] = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def hardware() -> dict:
  devices = jax.devices()
  return {"platform": devices[0].platform, "device_kind": devices[0].device_kind,
          "device_count": len(devices), "process_count": jax.process_count(),
          "host": platform.node()}


def truncate_metrics(path, last_step: int) -> None:
  """Drops metric lines after `last_step` (written after the checkpoint a resume starts from),
  and everything from a line cut by the kill on."""
  storage.keep_jsonl(path, lambda x: x.get("step", 0) <= last_step)
