"""Test set-up: 8 simulated CPU devices so every sharding path runs without an accelerator."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def gcs_bucket():
  """`gs://<bucket>` on a Cloud Storage emulator on localhost (tests/fake_gcs.py)."""
  from tests import fake_gcs

  with fake_gcs.serve() as bucket:
    yield bucket
