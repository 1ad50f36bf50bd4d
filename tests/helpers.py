"""Shared test utilities."""

from __future__ import annotations

import os
import pathlib

from scaling import config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(spec: str):
  """`configs/dense.py:tiny` (relative to the repository) -> the ConfigDict."""
  return config.load(os.fspath(ROOT / spec))
