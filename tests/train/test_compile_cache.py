"""The ladder workers' compilation cache: under the workdir, unless the user chose one."""

import jax
import pytest

from scaling.train import compile_cache


@pytest.fixture
def no_cache(monkeypatch):
  monkeypatch.delenv(compile_cache.ENV, raising=False)
  before = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", None)
  yield
  jax.config.update("jax_compilation_cache_dir", before)


def test_local_workdir_gets_its_own_cache(no_cache, tmp_path):
  got = compile_cache.use_ladder_cache(tmp_path)
  assert got == str(tmp_path / ".cache" / "jax")
  assert jax.config.jax_compilation_cache_dir == got
  jax.jit(lambda x: x * 2.0 + 1.0)(jax.numpy.ones(3)).block_until_ready()


def test_the_users_cache_wins(no_cache, tmp_path, monkeypatch):
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "mine"))
  assert compile_cache.use_ladder_cache(tmp_path / "wd") == str(tmp_path / "mine")
  assert jax.config.jax_compilation_cache_dir is None  # left to jax, which reads the variable


def test_object_store_workdir_gets_none(no_cache):
  assert compile_cache.use_ladder_cache("gs://bucket/ladder") is None
  assert jax.config.jax_compilation_cache_dir is None
