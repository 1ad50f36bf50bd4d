"""The run record (`result.json`): its one definition (`RunRecord`), reader, writer and provenance.

`result.json` is the contract between training and fitting: counts from `scaling.accounting`,
tokens D, FLOPs C with the method named, losses, time, hardware, versions. `RunRecord` is the
only place its keys are spelled: training writes one (`write_result`), and the ladder, results
and fit layers read every record through `RunRecord.from_json` (`read_result` for one workdir,
`scaling.ladder.results.read_run_records` for a ladder).

Schema versions (`schema_version`):
  1  records written before the key existed (read as version 1; their missing keys are None)
  2  the same keys plus `schema_version`
Keys a reader does not know (written by a newer version, or added by hand) are kept in `extra`
and written back unchanged, so reading and rewriting a record never drops anything.

Adding an optional key is one line in `RunRecord` below, `name: type | None = None`: records
that lack it (every older one) read it as None, and `to_json` writes it in declaration order.

Writes go through `scaling.storage` (atomic, local or `gs://`). This module imports no JAX at
module level, so the fit layer reads records without starting it.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
from collections.abc import Mapping
from typing import Any

from scaling import storage

RESULT = "result.json"
METRICS = "metrics.jsonl"
SCHEMA_VERSION = 2
LEGACY_SCHEMA_VERSION = 1  # a record without `schema_version`


@dataclasses.dataclass
class RunRecord:
  """One run's `result.json`. Every key is optional on read (older records lack some): a
  missing key is None. Units: counts in parameters, tokens, FLOPs; losses in nats per token;
  `wall_time_s` seconds of training, resumes included.
  """

  schema_version: int = SCHEMA_VERSION
  run_id: str | None = None
  status: str | None = None  # complete | failed | interrupted
  config: dict | None = None  # the resolved config (`ConfigDict.to_dict()`)
  params_non_embedding: int | None = None  # N (Kaplan et al. 2020)
  params_total: int | None = None
  params_active: int | None = None
  params_embedding: int | None = None
  params_active_non_embedding: int | None = None
  experts: int | None = None  # routed experts, 1 for a dense model
  tokens: int | None = None  # D
  flops: float | None = None  # C, by `flops_method`
  flops_method: str | None = None
  flops_by_method: dict | None = None  # C by every method of `scaling.accounting`
  steps: int | None = None
  steps_done: int | None = None
  final_eval_loss: float | None = None  # None unless status is complete
  best_eval_loss: float | None = None
  entropy_floor: float | None = None  # the data's irreducible loss when known
  data: dict | None = None  # the data's metadata, `name` and `vocab_size`
  config_identity: str | None = None  # `scaling.train.identity.identity_hash`
  metrics_path: str | None = None  # relative to the run folder
  wall_time_s: float | None = None
  hardware: dict | None = None
  mesh: dict | None = None  # mesh axis -> size
  versions: dict | None = None
  error: str | None = None  # why a failed run failed
  parent_run_id: str | None = None  # a wsd cooldown branch's trunk (`branch.parent`)
  branch_step: int | None = None  # the trunk step the branch forked at (`branch.step`)
  init_from: str | None = None  # the weights the run started from (`model.init_from`, hf:DIR)
  grad_noise_scale: float | None = None  # B_simple (tokens) over the last eval's window
  grad_noise_scale_stderr: float | None = None  # its standard error (train/step.NoiseScale)
  parametrization: dict | None = None  # sp | mup, base width, per-group LR multipliers
  # Keys this version does not define, kept verbatim (written after the known ones).
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> RunRecord:
    """The record of a parsed result.json object. Values are taken as written (no coercion:
    a reader that needs a type checks it); a record without `schema_version` is version 1."""
    known = {k: v for k, v in data.items() if k in _FIELDS}
    known.setdefault("schema_version", LEGACY_SCHEMA_VERSION)
    return cls(**known, extra={k: v for k, v in data.items() if k not in _FIELDS})

  def to_json(self) -> dict[str, Any]:
    """The JSON object of result.json: the known keys in declaration order, then `extra`."""
    out = {name: getattr(self, name) for name in _FIELDS}
    out.update({k: v for k, v in self.extra.items() if k not in out})
    return out


# Every key RunRecord spells (`extra` is not a key of the file).
_FIELDS = tuple(f.name for f in dataclasses.fields(RunRecord) if f.name != "extra")


def read_result(workdir) -> RunRecord | None:
  """The run record in `workdir`, or None when there is none (missing, torn, not an object)."""
  data = storage.read_json(storage.Path(workdir) / RESULT)
  return RunRecord.from_json(data) if isinstance(data, dict) else None


def write_result(workdir, record: RunRecord) -> None:
  """Writes `workdir/result.json` atomically."""
  storage.write_json(storage.Path(workdir) / RESULT, record.to_json())


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
  import jax  # here, not at module level: readers of records never start JAX

  devices = jax.devices()
  return {"platform": devices[0].platform, "device_kind": devices[0].device_kind,
          "device_count": len(devices), "process_count": jax.process_count(),
          "host": platform.node()}


def truncate_metrics(path, last_step: int) -> None:
  """Drops metric lines after `last_step` (written after the checkpoint a resume starts from),
  and everything from a line cut by the kill on."""
  storage.keep_jsonl(path, lambda x: x.get("step", 0) <= last_step)
