"""Shared test utilities."""

from __future__ import annotations

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(spec: str):
  """`configs/dense.py:tiny` -> the ConfigDict, as config_flags would load it."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("cfg_" + path.replace("/", "_"),
                                                       ROOT / path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)
