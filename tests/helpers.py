"""Shared test utilities."""

from __future__ import annotations

import os
import pathlib

from scaling import config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def xla_flags(devices: int | None = None) -> str:
  """XLA_FLAGS for a process a test starts: the suite's flags (tests/conftest.py) with `devices`
  simulated CPU devices, or XLA's default (one) when None."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  if devices is not None:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  return " ".join(flags)


def load_config(spec: str):
  """`configs/dense.py:tiny` (relative to the repository) -> the ConfigDict."""
  return config.load(os.fspath(ROOT / spec))


def run_cli(capfd, argv: list[str]) -> tuple[int, str]:
  """Runs `scaling ARGV` in-process; (exit status, stderr captured by pytest's `capfd`)."""
  code, _, err = run_cli_captured(capfd, argv)
  return code, err


def run_cli_captured(capfd, argv: list[str]) -> tuple[int, str, str]:
  """Runs `scaling ARGV` in-process; (exit status, stdout, stderr) captured by `capfd`.

  `scaling train` configures the root logger onto the captured stderr; it is restored after,
  so one test's handlers never write into the next test's capture.
  """
  import logging

  from scaling import cli

  capfd.readouterr()
  root = logging.getLogger()
  handlers, level = root.handlers[:], root.level
  try:
    code = cli.main(argv)
  finally:
    root.handlers[:], root.level = handlers, level
  out, err = capfd.readouterr()
  return code, out, err
