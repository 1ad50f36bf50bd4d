"""Test set-up: 8 simulated CPU devices so every sharding path runs without an accelerator."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
