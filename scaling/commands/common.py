"""The one command-line convention of every `scaling` sub-command, on absl flags.

Every command (`info`, `train`, `ladder`, `results`, `fit`, `plan`) parses with `parse()`:

- `--flag value` and `--flag=value` both work (absl, GNU mode), and positionals may stand
  anywhere; `--` ends the flags;
- `-h` / `--help` prints the command's usage and every flag with its default (exit 0, through
  `HelpShown` and the `command` decorator);
- an unknown flag, a bad value or a missing positional is one `ScalingError` line that names it
  and points to `<command> --help`;
- `--config=FILE[:ARG]` (where the command takes a config) is loaded by
  `scaling.config_file.load_config`, so a config that fails to load is reported as
  `FILE:LINE: message` with the offending source line, and any field is overridden with
  `--config.a.b=value` through `ml_collections.config_flags`.

Each call builds its own `absl.flags.FlagValues`, so commands run in-process (tests, notebooks)
without colliding on absl's global flags.
"""

from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Callable
from typing import NamedTuple

from absl import flags
from ml_collections import config_flags

from scaling.config_file import load_config
from scaling.errors import ScalingError

HELP_TOKENS = ("-h", "--help", "-help", "--helpfull")
CONFIG_HELP = ("Config file and its argument (a preset), e.g. configs/dense.py:tiny; override "
               "any field with --config.a.b=VALUE (fields: scaling/config.py:default_config).")
# absl's own flags (flag files, undefok) work but are not part of a command's documented surface.
_SPECIAL = ("flagfile", "undefok")


class HelpShown(Exception):  # noqa: N818 (a control-flow signal, not an error)
  """Raised by `parse` after printing `--help`; the `command` decorator turns it into exit 0."""


class Parsed(NamedTuple):
  """A parsed command line: the flags, the positional arguments, and `argv` as given."""
  fv: flags.FlagValues
  args: list[str]
  argv: list[str]


def command(main: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
  """Wraps a sub-command's `main(argv) -> status` so that `--help` returns 0 in-process too."""

  @functools.wraps(main)
  def wrapper(argv: list[str]) -> int:
    try:
      return main(argv)
    except HelpShown:
      return 0

  return wrapper


def parse(argv: list[str], define: Callable[[flags.FlagValues], None] | None = None, *,
          prog: str, usage: str, description: str = "", config: bool = False,
          config_positional: bool = False, nargs: tuple[int, int] = (0, 0)) -> Parsed:
  """Parses `argv` (the arguments after the sub-command's name) into a fresh FlagValues.

  Args:
    argv: the arguments, in any order.
    define: defines the command's flags on the FlagValues it is given.
    prog: the command as typed (`scaling fit`), for messages and help.
    usage: the usage line (without `usage: `).
    description: a sentence for `--help`.
    config: the command requires `--config=FILE[:ARG]` (loaded into `fv["config"].value`).
    config_positional: the first positional argument is the config (`scaling ladder show C`).
    nargs: (min, max) positional arguments the command takes after the config.

  Raises:
    HelpShown: after printing help for `-h`/`--help`.
    ScalingError: one line for an unknown flag, a bad value, a config that fails to load, or a
      wrong number of positional arguments.
  """
  argv = [str(a) for a in argv]
  fv = flags.FlagValues()
  if define is not None:
    define(fv)
  if _wants_help(argv):
    print(_help(fv, prog, usage, description, config))
    raise HelpShown(prog)
  rest = _positional_to_config(argv, fv, prog) if config_positional else list(argv)
  if config:
    spec, rest = _pop_config(rest, prog)
    _define_config(fv, spec, rest, prog)
  try:
    positional = fv(["scaling", *rest])[1:]
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError, OSError) as e:
    raise _explain(e, rest, prog) from None
  _check_values(fv, prog)
  lo, hi = nargs
  if len(positional) > hi:
    raise ScalingError(f"{prog}: unexpected argument {positional[hi]!r}; usage: {usage} "
                       f"(see `{prog} --help`)")
  if len(positional) < lo:
    raise ScalingError(f"{prog}: missing argument; usage: {usage} (see `{prog} --help`)")
  return Parsed(fv, list(positional), list(argv))


def _wants_help(argv: list[str]) -> bool:
  for a in argv:
    if a == "--":
      return False
    if a in HELP_TOKENS:
      return True
  return False


def _positional_to_config(argv: list[str], fv: flags.FlagValues, prog: str) -> list[str]:
  """Rewrites the first positional argument as `--config=ARG` (GNU rules: a non-boolean flag
  given without `=` takes the next argument as its value)."""
  i = 0
  while i < len(argv):
    a = argv[i]
    if a == "--":
      if i + 1 < len(argv):
        return argv[:i] + [f"--config={argv[i + 1]}"] + argv[i:i + 1] + argv[i + 2:]
      break
    if a.startswith("-") and a != "-":
      name = a.lstrip("-")
      if "=" not in name and _takes_value(fv, name) and i + 1 < len(argv):
        i += 1  # the next argument is this flag's value
    else:
      if any(_is_config_flag(b) for b in argv):
        raise ScalingError(f"{prog}: the config is given twice ({a!r} and --config); give one")
      return argv[:i] + [f"--config={a}"] + argv[i + 1:]
    i += 1
  return list(argv)


def _takes_value(fv: flags.FlagValues, name: str) -> bool:
  if name == "config" or name.startswith("config."):
    return True  # the config's fields are not known before it is loaded
  return name in fv and not fv[name].boolean


def _is_config_flag(arg: str) -> bool:
  return arg in ("--config", "-config") or arg.startswith(("--config=", "-config="))


def _pop_config(argv: list[str], prog: str) -> tuple[str | None, list[str]]:
  """Takes `--config=X` / `--config X` out of `argv` (the last one wins, as for any flag)."""
  spec, rest, i = None, [], 0
  while i < len(argv):
    a = argv[i]
    if a == "--":
      rest += argv[i:]
      break
    if _is_config_flag(a):
      if "=" in a:
        spec = a.split("=", 1)[1]
      elif i + 1 < len(argv):
        spec, i = argv[i + 1], i + 1
      else:
        raise ScalingError(f"{prog}: --config needs a value, e.g. --config=configs/dense.py:tiny")
    else:
      rest.append(a)
    i += 1
  return spec, rest


def _define_config(fv: flags.FlagValues, spec: str | None, rest: list[str], prog: str) -> None:
  """Loads the config (or fails with `FILE:LINE`) and defines `--config` with its overrides."""
  if spec is None:
    override = next((a for a in rest if a.startswith(("--config.", "-config.", "--noconfig."))),
                    None)
    if override:
      raise ScalingError(f"{prog}: {override.split('=', 1)[0]} overrides a field of --config, "
                         "which is missing; add --config=FILE[:ARG], e.g. "
                         "--config=configs/dense.py:tiny")
    raise ScalingError(f"{prog}: --config is required, e.g. --config=configs/dense.py:tiny "
                       f"(see `{prog} --help`)")
  cfg = load_config(spec)
  try:  # config_flags defines an override flag per `--config.a.b` in sys_argv, checking it now
    config_flags.DEFINE_config_dict("config", cfg, CONFIG_HELP, flag_values=fv,
                                    lock_config=True, sys_argv=["scaling", *rest])
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    raise _explain(e, rest, prog) from None


def _check_values(fv: flags.FlagValues, prog: str) -> None:
  """absl accepts `nan` and `inf` for float flags; no command means them."""
  for name in fv:
    value = fv[name].value
    values = value if isinstance(value, list) else [value]
    for v in values:
      if isinstance(v, float) and not math.isfinite(v):
        raise ScalingError(f"{prog}: --{name}={v} must be a finite number (see "
                           f"`{prog} --help`)")


def _explain(e: BaseException, argv: list[str], prog: str) -> ScalingError:
  """One readable line for a flag or config failure, naming the flag or field."""
  cause: BaseException | None = e
  while cause is not None:
    if isinstance(cause, ScalingError) and "\n" not in str(cause):
      return cause
    cause = cause.__cause__ or cause.__context__
  hint = f"see `{prog} --help`"
  if isinstance(e, flags.UnrecognizedFlagError):
    name = e.flagname
    if name.startswith(("config.", "noconfig.")):
      return ScalingError(f"{prog}: unknown flag --{name}; a config field is set with "
                          "--config.a.b=VALUE after --config=FILE (a boolean one also as "
                          f"--config.a.b or --noconfig.a.b); {hint}")
    text = str(e)
    maybe = ""
    if "Did you mean:" in text:
      maybe = f" (did you mean --{text.split('Did you mean:', 1)[1].strip(' ?')}?)"
    return ScalingError(f"{prog}: unknown flag --{name}{maybe}; {hint}")
  if isinstance(e, (KeyError, AttributeError)):
    key = str(e).strip("\"'")
    for arg in argv:
      name = arg.split("=", 1)[0].lstrip("-")
      if name.startswith("config.") and name.split(".")[-1] == key:
        return ScalingError(f"unknown config field {name[len('config.'):]!r} (from {arg}); "
                            "see scaling/config.py:default_config for the fields")
  lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
  for ln in reversed(lines):
    if ln.startswith("scaling.errors.ScalingError:"):
      return ScalingError(ln.split(":", 1)[1].strip())
  if isinstance(e, flags.Error):
    return ScalingError(f"{prog}: {_flag_message(lines[0] if lines else type(e).__name__)}; "
                        f"{hint}")
  return ScalingError(f"{prog}: {lines[0] if lines else type(e).__name__}")


def _flag_message(text: str) -> str:
  """absl's `flag --x=v: invalid literal for int() ...` -> `--x=v: not an integer`."""
  if text.startswith("flag --"):
    text = text[len("flag "):]
  head, sep, detail = text.partition(": ")
  if "invalid literal for int()" in detail:
    detail = "not an integer"
  elif "could not convert string to float" in detail:
    detail = "not a number"
  elif "Non-boolean argument" in detail:
    detail = "not a boolean (use --flag, --noflag, --flag=true or --flag=false)"
  return f"{head}{sep}{detail}"


def _help(fv: flags.FlagValues, prog: str, usage: str, description: str, config: bool) -> str:
  """`usage:`, the description, then every flag with its help, type and default."""
  out = [f"usage: {usage}"]
  if description:
    out += ["", textwrap.fill(description, 96)]
  out += ["", "flags:"]
  entries = []
  if config:
    entries.append(("--config=FILE[:ARG]", CONFIG_HELP + " Required."))
  for name in sorted(set(fv)):
    if name in _SPECIAL:
      continue
    flag = fv[name]
    if flag.boolean:
      head, default = f"--[no]{name}", "true" if flag.default else "false"
    else:
      head = f"--{name}=VALUE"
      default = "none" if flag.default is None else _shown(flag.default)
    kind = getattr(flag.parser, "syntactic_help", "")
    extra = f"; {kind}" if kind and not flag.boolean else ""
    if isinstance(flag, flags.MultiFlag):
      extra += "; repeat the flag for several values"
    entries.append((head, f"{flag.help} (default: {default}{extra})"))
  for head, text in entries:
    out.append(f"  {head}")
    out.append(textwrap.fill(text, 96, initial_indent=" " * 6, subsequent_indent=" " * 6))
  out += ["  -h, --help", textwrap.fill(
      "Print this help and exit. `--flag value` and `--flag=value` both work; positional "
      "arguments may stand anywhere; `--` ends the flags.", 96, initial_indent=" " * 6,
      subsequent_indent=" " * 6)]
  return "\n".join(out)


def _shown(default) -> str:
  if isinstance(default, list):
    return ",".join(str(v) for v in default) or "none"
  return str(default)
