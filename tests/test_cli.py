"""One CLI convention for every command: --help, `--flag value`, positionals anywhere, unknown
flags, and config files that fail to load (issue 12, defects 3, 5 and 8). All in-process; none
of these trains or compiles anything."""

import json

import pytest

from scaling import cli
from tests.helpers import ROOT

TINY = f"{ROOT}/configs/dense.py:tiny"
LADDER = f"{ROOT}/tests/ladder/tiny_ladder.py"


def _one_error(capsys, needle: str) -> str:
  err = capsys.readouterr().err
  first = err.splitlines()[0]
  assert first.startswith("error: ") and needle in first, err
  assert "Traceback" not in err
  return err


@pytest.mark.parametrize("argv,usage", [
    (["train", "--help"], "usage: scaling train"),
    (["train", "-h"], "usage: scaling train"),
    (["info", "--config=nope.py", "--help"], "usage: scaling info"),  # help before loading
    (["ladder", "run", "--help"], "usage: scaling ladder run"),
    (["ladder", "show", "-h"], "usage: scaling ladder show"),
    (["ladder", "status", "--help"], "usage: scaling ladder status"),
    (["ladder", "worker", "-h"], "usage: scaling ladder worker"),
    (["results", "collect", "-h"], "usage: scaling results collect"),
    (["fit", "--help"], "usage: scaling fit"),
    (["plan", "-h"], "usage: scaling plan"),
])
def test_every_command_prints_help_with_every_flag_and_default(argv, usage, capsys):
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert out.startswith(usage)
  assert "--help" in out and "(default: " in out
  if argv[0] == "train":
    for flag in ("--workdir", "--config=FILE", "--[no]json", "--coordinator"):
      assert flag in out
  if argv[0] == "fit":
    assert "--drop-highest-loss" in out and "(default: 1000; a non-negative integer)" in out
  if argv[:2] == ["ladder", "run"]:
    assert "--backend" in out and "(default: local" in out and "--parallel" in out


@pytest.mark.parametrize("argv,needle,prog", [
    (["train", f"--config={TINY}", "--wrkdir=/tmp/x"], "unknown flag --wrkdir", "train"),
    (["info", f"--config={TINY}", "--bogus"], "unknown flag --bogus", "info"),
    (["ladder", "show", LADDER, "--frob=1"], "unknown flag --frob", "ladder show"),
    (["results", "collect", ".", "--outt=x.csv"], "unknown flag --outt", "results collect"),
    (["fit", "x.csv", "--lawz=kaplan"], "unknown flag --lawz", "fit"),
    (["plan", "--flop=1e21"], "unknown flag --flop", "plan"),
])
def test_unknown_flag_is_one_line_pointing_to_help(argv, needle, prog, capsys):
  assert cli.main(argv) == 2
  err = _one_error(capsys, needle)
  assert f"see `scaling {prog} --help`" in err and len(err.strip().splitlines()) == 1


def test_flag_space_value_and_positionals_anywhere(capsys):
  # --flag value, --flag=value, and the config as a positional after its own flag.
  assert cli.main(["info", "--json", "--config", TINY, "--config.model.num_layers", "3"]) == 0
  assert json.loads(capsys.readouterr().out)["shape"]["num_layers"] == 3
  assert cli.main(["ladder", "show", "--json", LADDER, "--config.ladder.name", "x"]) == 0
  rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
  assert len(rows) == 3
  assert cli.main(["plan", "--law", "ratio20", "--json", "--flops", "1e23"]) == 0
  assert json.loads(capsys.readouterr().out)["params"] == pytest.approx(2.887e10, rel=1e-3)


@pytest.mark.parametrize("argv,needle", [
    (["fit", "--bootstrap=-3", "x.csv"], "--bootstrap=-3"),  # defect 3: was a ValueError
    (["fit", "x.csv", "--bootstrap", "2.5"], "--bootstrap=2.5: not an integer"),
    (["fit", "x.csv", "--columns", "paramz=Model Size"], "'paramz' is not a column name"),
    (["fit", "x.csv", "--seed=-1"], "--seed=-1"),
    (["plan", "--flops=nan", "--law=ratio20"], "--flops=nan must be a finite number"),
    (["plan", "--flops=1e21", "--mfu=0"], "--mfu=0.0: must be a positive number"),
    (["fit"], "missing argument"),
    (["fit", "a.csv", "b.csv"], "unexpected argument 'b.csv'"),
])
def test_fit_and_plan_inputs_are_one_line(argv, needle, capsys):
  assert cli.main(argv) == 2
  err = _one_error(capsys, needle)
  assert len(err.strip().splitlines()) == 1


def test_fit_keeps_the_argv_for_provenance():
  from scaling.commands import fit as fit_cli

  argv = ["t.csv", "--drop-highest-loss", "5", "--columns=params=Model Size", "--filter", "a=b",
          "--filter=c=d"]
  args = fit_cli.parse_fit_args(argv)
  assert args.argv == argv and args.table == "t.csv" and args.drop_highest_loss == 5
  assert args.columns == ["params=Model Size"] and args.filter == ["a=b", "c=d"]


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_config_files_that_fail_to_load(tmp_path, capsys):
  syntax = _write(tmp_path, "syntax.py", "def get_config(:\n  return None\n")
  raises = _write(tmp_path, "raises.py", "def get_config(arg=None):\n  x = {}\n"
                  "  return x['missing']\n")
  noget = _write(tmp_path, "noget.py", "X = 1\n")
  cases = [
      (syntax, f"{syntax}:1: SyntaxError", "def get_config(:"),
      (f"{raises}:a", f"{raises}:3: KeyError: 'missing'", "return x['missing']"),
      (noget, f"{noget}: defines no get_config()", None),
      (f"{ROOT}/configs/dense.py:nope", "configs/dense.py:17: unknown model preset 'nope'", None),
  ]
  for spec, first, source in cases:
    for argv in (["train", f"--config={spec}", f"--workdir={tmp_path}/w"],
                 ["info", "--config", spec], ["ladder", "show", spec],
                 ["ladder", "run", spec, f"--workdir={tmp_path}/l"]):
      assert cli.main(argv) == 2, argv
      err = _one_error(capsys, first)
      lines = err.strip().splitlines()
      assert lines[1:] == ([f"    {source}"] if source else []), (argv, err)
  assert not (tmp_path / "w").exists() and not (tmp_path / "l").exists()  # nothing written


def test_ladder_run_refuses_a_file_as_workdir_before_writing_anything(tmp_path, capsys):
  workdir = tmp_path / "notes.txt"
  workdir.write_text("mine")
  assert cli.main(["ladder", "run", LADDER, "--workdir", str(workdir)]) == 2
  _one_error(capsys, "is a file, not a folder")
  assert workdir.read_text() == "mine" and sorted(tmp_path.iterdir()) == [workdir]
