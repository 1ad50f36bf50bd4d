"""Flag parsing shared by the config-driven commands (`info`, `train`, `ladder`).

Each call builds its own `absl.flags.FlagValues`, so commands can run in-process (tests,
notebooks) without colliding on absl's global flags, and `--config=FILE:ARG --config.a.b=v`
works the same everywhere through `ml_collections.config_flags`.
"""

from __future__ import annotations

from collections.abc import Callable

from absl import flags
from ml_collections import config_flags

from scaling.errors import ScalingError


def parse(argv: list[str], define: Callable[[flags.FlagValues], None],
          needs_config: bool = True) -> flags.FlagValues:
  """Parses `argv` (arguments after the sub-command) into a fresh FlagValues."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file(
      "config", None, "Config file and preset, e.g. configs/dense.py:tiny.", flag_values=fv,
      lock_config=True, sys_argv=["scaling", *argv])  # not sys.argv: commands run in-process too
  define(fv)
  try:
    fv(["scaling", *argv])
    config = fv["config"].value
    if config is not None:
      config.keys()  # config_flags defers load errors to first access: surface them here
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    raise _explain(e, argv) from None
  if needs_config and config is None:
    raise ScalingError("--config is required, e.g. --config=configs/dense.py:tiny")
  return fv


def _explain(e: BaseException, argv: list[str]) -> ScalingError:
  """One readable line for a flag or config failure, naming the field when we can."""
  cause: BaseException | None = e
  while cause is not None:
    if isinstance(cause, ScalingError) and "\n" not in str(cause):
      return cause
    cause = cause.__cause__ or cause.__context__
  if isinstance(e, (KeyError, AttributeError)):
    key = str(e).strip("\"'")
    for arg in argv:
      name = arg.split("=", 1)[0]
      if name.startswith("--config.") and name.split(".")[-1] == key:
        return ScalingError(f"unknown config field {name[len('--config.'):]!r} (from {arg}); "
                            "see scaling/config.py:default_config for the fields")
  lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
  # config_flags flattens a failing get_config() into text; keep the exception's own line.
  for ln in reversed(lines):
    if ln.startswith("scaling.errors.ScalingError:"):
      return ScalingError(ln.split(":", 1)[1].strip())
  for ln in lines:
    if "No such file" in ln or "Errno" in ln:
      return ScalingError(f"cannot load --config: {ln}; pass an existing file, e.g. "
                          "--config=configs/dense.py:tiny")
  return ScalingError(lines[0] if lines else type(e).__name__)
