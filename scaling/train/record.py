"""The run record (`result.json`) and other files others read: written atomically.

`result.json` is the contract between training and fitting (see DESIGN.md): counts from
`scaling.accounting`, tokens D, FLOPs C with the method named, losses, time, hardware, versions.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import platform
import tempfile

import jax

RESULT = "result.json"
METRICS = "metrics.jsonl"


def write_json_atomic(path: str | pathlib.Path, obj) -> None:
  """Writes JSON beside `path`, fsyncs, then renames over it: readers never see half a file."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=2, sort_keys=True, default=_jsonable)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def _jsonable(x):
  if hasattr(x, "item"):
    return x.item()
  if hasattr(x, "to_dict"):
    return x.to_dict()
  return str(x)


def read_result(workdir: str | pathlib.Path) -> dict | None:
  path = pathlib.Path(workdir) / RESULT
  if not path.exists():
    return None
  with path.open() as f:
    return json.load(f)


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


def truncate_metrics(path: str | pathlib.Path, last_step: int) -> None:
  """Drops metric lines after `last_step` (written after the checkpoint a resume starts from)."""
  path = pathlib.Path(path)
  if not path.exists():
    return
  keep = []
  with path.open() as f:
    for line in f:
      try:
        if json.loads(line).get("step", 0) <= last_step:
          keep.append(line if line.endswith("\n") else line + "\n")
      except json.JSONDecodeError:
        break  # a line cut by the kill: everything after it is gone too
  tmp = path.with_suffix(".tmp")
  tmp.write_text("".join(keep))
  os.replace(tmp, path)
