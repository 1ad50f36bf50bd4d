"""Config files: `FILE[:ARG]` -> the file's `get_config(ARG)`, or one `FILE:LINE:` error.

The one loader behind `--config=` on every command, `scaling.config.load` (notebooks) and the
ladder; it runs the file itself (rather than through `ml_collections.config_flags`) so a
failure keeps its real exception and line number.
"""

from __future__ import annotations

import os
import traceback
import types

from ml_collections import config_dict

from scaling.errors import ScalingError


def load_config(spec: str) -> config_dict.ConfigDict:
  """`FILE[:ARG]` -> that file's `get_config(ARG)` (or `get_config()` without `:ARG`).

  Any failure is a `ScalingError` reading `FILE:LINE: message`, followed by the offending
  source line when the fault is in the file (a syntax error, an exception while it runs);
  a `ScalingError` raised by the config's own checks (an unknown preset) keeps its message.
  """
  path, sep, arg = spec.partition(":")
  try:
    with open(path, encoding="utf-8") as fh:
      source = fh.read()
  except OSError as e:
    raise ScalingError(f"cannot load --config={spec}: {e.strerror or e} ({path}); pass an "
                       "existing file, e.g. --config=configs/dense.py:tiny") from None
  try:
    code = compile(source, path, "exec")
  except SyntaxError as e:
    raise _config_error(path, e.lineno, f"{type(e).__name__}: {e.msg}", e.text) from None
  module = types.ModuleType(f"_scaling_config_{os.path.basename(path).replace('.', '_')}")
  module.__file__ = path
  try:
    exec(code, module.__dict__)  # noqa: S102 (a config file is Python by design)
  except Exception as e:  # noqa: BLE001 (any failure of the file is reported, with its line)
    raise _raised_in(path, e, None) from None
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ScalingError(f"{path}: defines no get_config(); a config file defines "
                       "get_config(arg=None) returning an ml_collections.ConfigDict")
  try:
    cfg = get_config(arg) if sep else get_config()
  except Exception as e:  # noqa: BLE001
    raise _raised_in(path, e, get_config.__code__.co_firstlineno) from None
  if not isinstance(cfg, config_dict.ConfigDict):
    raise _config_error(path, get_config.__code__.co_firstlineno,
                        f"get_config({repr(arg) if sep else ''}) returned "
                        f"{type(cfg).__name__}, not an "
                        "ml_collections.ConfigDict", None)
  return cfg


def _raised_in(path: str, e: Exception, fallback_line: int | None) -> ScalingError:
  """The error line for an exception raised while a config file ran: the innermost frame in
  the file gives the line (the call site when the error came from a library it called)."""
  frames = [f for f in traceback.extract_tb(e.__traceback__)
            if os.path.abspath(f.filename) == os.path.abspath(path)]
  line = frames[-1].lineno if frames else fallback_line
  text = frames[-1].line if frames else None
  msg = str(e).splitlines()[0] if str(e).strip() else ""
  if isinstance(e, ScalingError):
    return _config_error(path, line, msg, None)  # a deliberate message names its own fix
  return _config_error(path, line, f"{type(e).__name__}: {msg}".rstrip(": "), text)


def _config_error(path: str, line: int | None, msg: str, text: str | None) -> ScalingError:
  where = f"{path}:{line}" if line else path
  src = f"\n    {text.strip()}" if text and text.strip() else ""
  return ScalingError(f"{where}: {msg}{src}")
