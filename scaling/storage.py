"""Files of runs and ladders, on local disks and on Cloud Storage (`gs://`), via etils.epath.

Every file a user relies on (result.json, metrics.jsonl, manifests, locks) goes through here,
and each writer keeps the same guarantee on both kinds of storage:

  atomic     `write_text`/`write_json`: a reader sees the old file or the new one, never half.
             Local: written aside, fsynced, renamed over. GCS: an object becomes visible only
             when its upload completes, so one upload is already atomic.
  exclusive  `create_exclusive`: of several concurrent creators exactly one succeeds.
             Local: link(2) of a fully written file. GCS: an upload with the precondition
             `ifGenerationMatch=0`, which the service checks atomically (412 otherwise).
  append     `JsonlLog`: a line log. Local: append and flush. GCS objects cannot be appended
             to, so the log keeps its lines and rewrites the object (atomically) on each write.

`check_workdir` probes a workdir before a run opens anything in it (a local file in the way, a
bucket that cannot be reached), so those end in one line naming the cause.

orbax (checkpoints) speaks `gs://` itself, through tensorstore. `pip install 'scaling[gcs]'`
installs what `gs://` needs (gcsfs).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile

from etils import epath


def Path(p: str | os.PathLike) -> epath.Path:  # noqa: N802 - a constructor
  """An epath.Path: pathlib on local disks, gcsfs for `gs://`."""
  return epath.Path(p)


def is_local(path: str | os.PathLike) -> bool:
  return "://" not in os.fspath(path)


def _jsonable(x):
  if hasattr(x, "item"):
    return x.item()
  if hasattr(x, "to_dict"):
    return x.to_dict()
  return str(x)


def dumps(obj) -> str:
  """The JSON text this project writes: sorted keys, indented, numpy scalars as numbers."""
  return json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n"


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
  """Replaces `path` by `data` atomically (see the module docstring), creating parents."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if not is_local(path):
    path.write_bytes(data)
    return
  fd, tmp = tempfile.mkstemp(dir=os.fspath(path.parent), prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, os.fspath(path))
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def write_text(path: str | os.PathLike, text: str) -> None:
  write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj) -> None:
  write_text(path, dumps(obj))


def read_json(path: str | os.PathLike) -> dict | None:
  """The parsed file, or None when it is missing or torn (a non-atomic foreign writer)."""
  try:
    return json.loads(Path(path).read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """The lines of a JSON-lines file up to the first torn one (a write cut by a kill)."""
  path = Path(path)
  try:
    text = path.read_text()
  except FileNotFoundError:
    return []
  out = []
  for line in text.splitlines():
    if not line.strip():
      continue
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError:
      break
  return out


def create_exclusive(path: str | os.PathLike, text: str) -> bool:
  """Creates `path` holding `text` if it does not exist; False if it does (someone else won)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if is_local(path):
    # Written aside, then hard-linked into place: link() fails if the target exists, and the
    # file never exists without its content (O_EXCL + write would leave an empty window).
    tmp = path.parent / f".{path.name}.{socket.gethostname()}.{os.getpid()}"
    tmp.write_text(text)
    try:
      os.link(os.fspath(tmp), os.fspath(path))
    except FileExistsError:
      return False
    finally:
      os.unlink(os.fspath(tmp))
    return True
  if os.fspath(path).startswith("gs://"):
    import fsspec

    fs, key = fsspec.core.url_to_fs(os.fspath(path))
    try:
      fs.pipe_file(key, text.encode(), mode="create")  # ifGenerationMatch=0
    except FileExistsError:
      return False
    return True
  # Other object stores: no portable conditional create; write and read back (last writer
  # wins, which narrows the race but does not close it).
  if path.exists():
    return False
  path.write_text(text)
  return path.read_text() == text


class JsonlLog:
  """An append-only JSON-lines file (see the module docstring for how GCS is handled)."""

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    self._lines: list[str] | None = None
    if not is_local(self.path):
      self._lines = [json.dumps(x, sort_keys=True) + "\n" for x in read_jsonl(self.path)]

  def append(self, obj: dict) -> None:
    line = json.dumps(obj, sort_keys=True) + "\n"
    if self._lines is None:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      with open(os.fspath(self.path), "a") as f:
        f.write(line)
        f.flush()
      return
    self._lines.append(line)
    write_text(self.path, "".join(self._lines))


def keep_jsonl(path: str | os.PathLike, keep) -> None:
  """Rewrites a JSON-lines file with only the lines `keep(obj)` accepts (atomically)."""
  path = Path(path)
  if not path.exists():
    return
  write_text(path, "".join(json.dumps(x, sort_keys=True) + "\n" for x in read_jsonl(path)
                           if keep(x)))


def check_workdir(path: str | os.PathLike, *, attempts: int = 3, deadline_s: float = 8.0) -> None:
  """Raises ScalingError (one line) unless `path` can hold a run, before any run file is opened.

  Local: neither the path nor a parent may be a file. `gs://`: the bucket must answer a listing
  under the path, tried `attempts` times within `deadline_s` seconds, so a missing network,
  credentials or bucket is named (DNS, refused, timeout, auth, missing bucket) instead of
  surfacing as retry tracebacks from deep inside gcsfs and aiohttp.
  """
  from scaling.errors import ScalingError

  text = os.fspath(path)
  if is_local(text):
    p = os.path.abspath(text)
    while not os.path.exists(p) and os.path.dirname(p) != p:
      p = os.path.dirname(p)
    if not os.path.isdir(p):
      where = "is a file" if p == os.path.abspath(text) else f"is inside the file {p}"
      raise ScalingError(f"workdir {text} {where}, not a folder; pass a new folder or a run's "
                         "folder as --workdir")
    return
  if text.startswith("gs://"):
    cause = _gcs_unreachable(text, attempts, deadline_s)
    if cause:
      raise ScalingError(f"cannot use {text}: {cause}")


def _gcs_unreachable(url: str, attempts: int, deadline_s: float) -> str | None:
  """None when the bucket of `url` answers an object listing, else the cause in a few words.

  Asks without credentials first: an offline machine fails in DNS or connect at once, before
  credential discovery (which can spend many seconds probing for a GCE metadata server).
  """
  import time
  import urllib.parse

  try:
    import gcsfs
  except ImportError:
    return "gs:// workdirs need gcsfs; pip install 'scaling[gcs]'"
  bucket, _, prefix = url[len("gs://"):].partition("/")
  if not bucket:
    return "the URL names no bucket; use gs://BUCKET/PATH"
  # Fresh instances: they read the emulator setting and credentials as they are now.
  base = gcsfs.GCSFileSystem(skip_instance_cache=True, token="anon").base
  target = (f"{base}b/{urllib.parse.quote(bucket, safe='')}/o?"
            + urllib.parse.urlencode({"maxResults": 1, "prefix": prefix}))
  host = urllib.parse.urlsplit(base).netloc
  end = time.monotonic() + deadline_s
  code, cause = _list_once(target, {}, host, attempts, end)
  if code in (401, 403):
    try:
      headers: dict = {}
      gcsfs.GCSFileSystem(skip_instance_cache=True).credentials.apply(headers)
    except Exception as e:  # noqa: BLE001 - google.auth raises many types
      return (f"no usable Google credentials ({type(e).__name__}: {str(e)[:200]}); run `gcloud "
              "auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS")
    code, cause = _list_once(target, headers, host, attempts, max(end, time.monotonic() + 4))
  if code == 200:
    return None
  if code == 404:
    return (f"bucket {bucket!r} does not exist (HTTP 404 from {host}); fix the bucket name or "
            f"create it (gcloud storage buckets create gs://{bucket})")
  if code in (401, 403):
    return (f"not allowed to list bucket {bucket!r} (HTTP {code} from {host}); check the "
            "credentials (gcloud auth application-default login) and the bucket's IAM")
  return cause


def _list_once(target: str, headers: dict, host: str, attempts: int,
               end: float) -> tuple[int | None, str]:
  """(HTTP status, cause) of one listing request, retrying network errors and 5xx/429 with
  back-off until `attempts` or the monotonic deadline `end` runs out; status None: no answer."""
  import time
  import urllib.error
  import urllib.request

  cause, tried, began = "no attempt made", 0, time.monotonic()
  for attempt in range(attempts):
    if end - time.monotonic() <= 0:
      break
    tried += 1
    try:
      with urllib.request.urlopen(urllib.request.Request(target, headers=headers),
                                  timeout=min(end - time.monotonic(), 4.0)) as r:
        return r.status, ""
    except urllib.error.HTTPError as e:
      if e.code < 500 and e.code != 429:
        return e.code, f"HTTP {e.code} from {host}"
      cause = f"HTTP {e.code} from {host}"
    except OSError as e:  # URLError is an OSError; so are socket errors and timeouts
      reason = getattr(e, "reason", e)
      if isinstance(reason, socket.gaierror):
        cause = f"DNS lookup of {host} failed ({reason.strerror or reason}); check the network"
      elif isinstance(reason, ConnectionRefusedError):
        cause = f"connection to {host} refused"
      elif isinstance(reason, TimeoutError):
        cause = f"no answer from {host}"
      else:
        cause = f"cannot connect to {host} ({reason})"
    if attempt + 1 < attempts:
      time.sleep(max(0.0, min(0.5 * 2 ** attempt, end - time.monotonic())))
  return None, f"{cause} (tried {tried} times in {time.monotonic() - began:.1f}s)"
