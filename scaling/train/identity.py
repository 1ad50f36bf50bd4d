"""A run's identity: its resolved config minus the fields that cannot change its result.

One rule serves two purposes. The ladder names each run folder by it (`scaling.ladder.spec.run_id`
is `<model.name>-<first 12 hex digits of identity_hash>`), and `scaling.train.loop.train` records
it in `workdir/identity.json` when a run starts and compares it on every later start: a workdir
holds exactly one run, so a config with another identity is refused before anything in the
workdir is touched, while fields outside the identity (the mesh, log/eval/checkpoint cadence,
remat, scan) may change between starts, e.g. for an elastic resume on another mesh.

`identity.json` holds `{"config_identity": <sha256 hex>, "identity": {...}}`. Workdirs written
before it existed are judged by their `config.json` (or the config in `result.json`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os

import ml_collections

from scaling import storage
from scaling.errors import ScalingError
from scaling.train import record

IDENTITY = "identity.json"
# Fields left out: they change where or how a run is computed or reported, not its numbers (the
# mesh and microbatches only change float reduction order; eval cadence only which intermediate
# evaluations are logged, the final one is always made). `run_id` and the `ladder` labels name a
# run; the same run in two ladders is one run.
IGNORED_FIELDS = (
    "run_id", "ladder", "mesh",
    "data.data_dir", "data.download",
    "train.log_every", "train.eval_every", "train.checkpoint_every", "train.keep_checkpoints",
    "train.hardware", "train.microbatches",
    "model.remat", "model.scan_layers", "model.attention_impl",
    "branch.parent_dir",  # where a hand-started branch's trunk lives (scaling.train.fork)
)
# Fields added after run ids were first handed out, with their defaults: at the default they are
# left out, so adding a field never renames (or orphans) the runs made before it existed.
LATER_FIELDS = {"train.decay_shape": "linear", "model.parametrization": "sp",
                "model.mup_base_width": 256,
                # the synthetic language's tasks (off by default: scaling.data.synthetic)
                "data.synthetic.tasks": "", "data.synthetic.addition_fraction": 0.05,
                "data.synthetic.addition_digits": 5}
MAX_NAMED = 5  # differing fields named in the refusal; the rest are counted
_MISSING = object()


def identity(cfg: ml_collections.ConfigDict | dict) -> dict:
  """The config as plain JSON data (tuples as lists) without `IGNORED_FIELDS`."""
  d = copy.deepcopy(cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg))
  for path in IGNORED_FIELDS:
    *parents, leaf = path.split(".")
    node = d
    for p in parents:
      node = node.get(p, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
      node.pop(leaf, None)
  for path, default in LATER_FIELDS.items():
    *parents, leaf = path.split(".")
    node = d
    for p in parents:
      node = node.get(p, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict) and node.get(leaf, default) == default:
      node.pop(leaf, None)
  return json.loads(json.dumps(d, default=str))


def identity_hash(cfg: ml_collections.ConfigDict | dict) -> str:
  """SHA-256 (64 hex digits) of the canonical JSON of `identity(cfg)`."""
  payload = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"), default=str)
  return hashlib.sha256(payload.encode()).hexdigest()


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict) and v:
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def _fmt(v) -> str:
  text = "(unset)" if v is _MISSING else repr(v)
  return text if len(text) <= 40 else text[:37] + "..."


def differences(recorded: dict, current: dict) -> list[str]:
  """`"field old -> new"` for every identity field that differs, sorted by field.

  A field only one side has (one version of this package added it) counts as equal when the
  other side holds its default, so adding a config field does not orphan older workdirs.
  """
  from scaling.config import default_config

  old, new = _flatten(identity(recorded)), _flatten(identity(current))
  defaults = _flatten(identity(default_config()))
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key, _MISSING), new.get(key, _MISSING)
    if a == b:
      continue
    present = b if a is _MISSING else a
    if (a is _MISSING or b is _MISSING) and defaults.get(key, _MISSING) == present:
      continue
    out.append(f"{key} {_fmt(a)} -> {_fmt(b)}")
  return out


def another_run(workdir, changes: list[str]) -> ScalingError:
  """The one-line refusal: `W holds another run (a 3 -> 2, ...); use a new --workdir`."""
  named = ", ".join(changes[:MAX_NAMED])
  if len(changes) > MAX_NAMED:
    named += f", +{len(changes) - MAX_NAMED} more"
  return ScalingError(f"{os.fspath(workdir)} holds another run ({named}); use a new --workdir")


def recorded(workdir) -> dict | None:
  """The identity the run in `workdir` started with, or None for a workdir with no run yet.

  `identity.json`, else (older workdirs) `config.json`, else the config in `result.json`.
  """
  workdir = storage.Path(workdir)
  saved = storage.read_json(workdir / IDENTITY)
  if saved is not None and isinstance(saved.get("identity"), dict):
    return saved["identity"]
  found = storage.read_json(workdir / "config.json")
  if isinstance(found, dict):
    return identity(found)
  result = record.read_result(workdir)
  if result is not None and isinstance(result.config, dict):
    return identity(result.config)
  return None


def check(workdir, cfg: ml_collections.ConfigDict) -> None:
  """Raises the refusal when `workdir` holds a run whose identity differs from `cfg`'s.

  Reads only; call it before anything in `workdir` is opened or written.
  """
  old = recorded(workdir)
  if old is None:
    return
  changes = differences(old, identity(cfg))
  if changes:
    raise another_run(workdir, changes)


def write(workdir, cfg: ml_collections.ConfigDict) -> None:
  """Records `cfg`'s identity in `workdir/identity.json` (atomically) unless one is there."""
  path = storage.Path(workdir) / IDENTITY
  if storage.read_json(path) is None:
    storage.write_json(path, {"config_identity": identity_hash(cfg), "identity": identity(cfg)})
