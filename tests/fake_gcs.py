"""A Cloud Storage emulator on localhost for the `gs://` tests (no network, no credentials).

`gcp-storage-emulator` serves the GCS JSON API in this process; the three clients the project
uses are pointed at it by their documented emulator settings: gcsfs (what etils.epath uses for
`gs://`) and google-cloud-storage (tensorboardX) by `STORAGE_EMULATOR_HOST`, tensorstore (orbax)
by `TENSORSTORE_GCS_HTTP_URL`. Subprocesses inherit the settings.

Two things real GCS does that the emulator does not, added here: uploads honour
`ifGenerationMatch=0` (create only if absent, checked atomically; the run locks rely on it), and
reads carry the object's `x-goog-generation` header and honour `ifGenerationNotMatch` with 304
(tensorstore revalidates its cache that way; without them orbax's OCDBT manifest reads fail with
"Malformed StorageGeneration").
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from http import HTTPStatus

BUCKET = "scaling-test"
_ENV = {"TENSORSTORE_GCS_HTTP_URL": None, "STORAGE_EMULATOR_HOST": None,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake", "GOOGLE_CLOUD_PROJECT": "fake",
        # gcsfs's zonal/HNS bucket probe asks the real control-plane API for every bucket.
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


def _create_only(insert):
  from gcp_storage_emulator.exceptions import NotFound

  def handler(request, response, storage, *args, **kwargs):
    if request.query.get("ifGenerationMatch") == ["0"]:
      name = (request.query.get("name") or [None])[0]
      if name is None and isinstance(request.data, dict):
        name = (request.data.get("meta") or {}).get("name")
      try:
        storage.get_file_obj(request.params["bucket_name"], name)
      except NotFound:
        pass
      else:
        response.status = HTTPStatus.PRECONDITION_FAILED
        response.json({"error": {"code": 412, "message": "conditionNotMet"}})
        return None
    return insert(request, response, storage, *args, **kwargs)

  return handler


def _with_generation(read):
  from gcp_storage_emulator.exceptions import NotFound

  def handler(request, response, storage, *args, **kwargs):
    try:
      obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except NotFound:
      obj = None
    if obj is not None and request.query.get("ifGenerationNotMatch") == [str(obj["generation"])]:
      response.status = HTTPStatus.NOT_MODIFIED  # tensorstore revalidating its cache
      return None
    out = read(request, response, storage, *args, **kwargs)
    if obj is not None and response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
      response["x-goog-generation"] = str(obj["generation"])
      response["x-goog-metageneration"] = str(obj.get("metageneration", 1))
    return out

  return handler


@contextlib.contextmanager
def serve() -> Iterator[str]:
  """Runs the emulator with one bucket; yields `gs://<bucket>`."""
  from gcp_storage_emulator import server
  from gcp_storage_emulator.handlers import objects

  for _, methods in server.HANDLERS:  # the emulator serves one request at a time: no race
    for method, fn in list(methods.items()):
      if fn is objects.insert:
        methods[method] = _create_only(fn)
      elif fn in (objects.download, objects.get):
        methods[method] = _with_generation(fn)
  logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)  # 404s are normal
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  emulator = server.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
  emulator.start()
  old = {k: os.environ.get(k) for k in _ENV}
  url = f"http://127.0.0.1:{port}"
  os.environ.update({k: v or url for k, v in _ENV.items()})
  try:
    yield f"gs://{BUCKET}"
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    emulator.stop()
