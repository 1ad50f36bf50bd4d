"""Fixtures for the ladder tests: the tiny ladder (tests/ladder/tiny_ladder.py) on small data."""

import pytest

from tests.helpers import load_config

TINY = "tests/ladder/tiny_ladder.py"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture
def tiny_ladder(data_dir):
  cfg = load_config(TINY)
  cfg.run.data.data_dir = data_dir
  return cfg


@pytest.fixture
def tiny_grid(data_dir):
  cfg = load_config(TINY + ":grid")
  cfg.run.data.data_dir = data_dir
  return cfg
