"""The ladder workers' compilation cache: under the workdir, unless the user chose one."""

import jax
import pytest

from scaling.train import compile_cache


@pytest.fixture
def no_cache(monkeypatch):
  monkeypatch.delenv(compile_cache.ENV, raising=False)
  monkeypatch.delenv(compile_cache.MIN_TIME_ENV, raising=False)
  before = (jax.config.jax_compilation_cache_dir,
            jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update("jax_compilation_cache_dir", None)
  yield
  jax.config.update("jax_compilation_cache_dir", before[0])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


def test_local_workdir_gets_its_own_cache(no_cache, tmp_path):
  got = compile_cache.use_ladder_cache(tmp_path)
  assert got == str(tmp_path / ".cache" / "jax")
  assert jax.config.jax_compilation_cache_dir == got
  assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0  # every program is kept
  jax.jit(lambda x: x * 2.0 + 1.0)(jax.numpy.ones(3)).block_until_ready()


def test_the_users_cache_wins(no_cache, tmp_path, monkeypatch):
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "mine"))
  min_time = jax.config.jax_persistent_cache_min_compile_time_secs
  assert compile_cache.use_ladder_cache(tmp_path / "wd") == str(tmp_path / "mine")
  assert jax.config.jax_compilation_cache_dir is None  # left to jax, which reads the variable
  assert jax.config.jax_persistent_cache_min_compile_time_secs == min_time  # and its settings


def test_a_chosen_minimum_compile_time_is_kept(no_cache, tmp_path, monkeypatch):
  monkeypatch.setenv(compile_cache.MIN_TIME_ENV, "5")
  min_time = jax.config.jax_persistent_cache_min_compile_time_secs
  compile_cache.use_ladder_cache(tmp_path)
  assert jax.config.jax_persistent_cache_min_compile_time_secs == min_time


def test_object_store_workdir_gets_none(no_cache):
  assert compile_cache.use_ladder_cache("gs://bucket/ladder") is None
  assert jax.config.jax_compilation_cache_dir is None
