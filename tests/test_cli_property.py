"""Property: no command line, however wrong, ends in a traceback (issue 12).

Random flag names (real and made up), values (empty, NaN, negative, huge, wrong type) and
argument orders go through `scaling.cli.main` in-process; every call must end in exit 0, or in
exit 2 with an `error:` line on stderr. The commands are chosen so that nothing trains or
compiles: `train` never gets a --workdir, `ladder` only shows or reads status, `fit` reads a
table that cannot be fitted. Deterministic (`derandomize`), so CI cannot flake.
"""

import contextlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaling import cli
from tests.helpers import ROOT

TINY = f"{ROOT}/configs/dense.py:tiny"
LADDER = f"{ROOT}/tests/ladder/tiny_ladder.py"

# Per command: the fixed arguments, and the flag names worth trying besides made-up ones.
FLAG_NAMES = {
    "info": ["config", "mesh", "json", "config.model.num_layers", "config.model.d_model",
             "config.train.seq_len", "config.model.dtype"],
    "train": ["config", "json", "coordinator", "num_processes", "process_id",
              "config.train.steps", "config.model.num_heads"],
    "ladder show": ["config", "json", "config.ladder.name", "config.run.train.lr",
                    "config.ladder.rules.min_steps"],
    "ladder status": ["workdir", "json"],
    "results collect": ["out", "all", "strict"],
    "fit": ["law", "approach", "method", "x", "moe", "bootstrap", "seed", "columns", "filter",
            "drop-highest-loss", "predict-flops", "flops-per-token", "holdout-above",
            "curve-loss", "json", "strict"],
    "plan": ["flops", "gpu-hours", "hardware", "mfu", "devices", "law", "flops-per-token",
             "inference-tokens", "config", "mesh", "json", "days", "params", "tokens", "price",
             "watts", "pue", "carbon", "unique-tokens", "inference-price", "experts", "sweep",
             "plot"],
}
VALUES = st.one_of(
    st.sampled_from(["", "nan", "-nan", "inf", "-inf", "-1", "-3", "0", "1", "2.5", "1e400",
                     "-1e308", "99999999999999999999", "abc", "true", "false", "none", "-",
                     "--", "x=y", ",", "=", ":", "data:0", "data:-1,model:2", "ratio20",
                     "h100", "chinchilla", "params=Model Size", "loss=", "float32",
                     "configs/dense.py:nope", "missing/x.csv"]),
    st.integers(-10**30, 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6),
)


def _tokens(names: list[str]):
  """One flag in any spelling (--n=v, --n v, --n, -n=v, --non) or a stray positional word."""
  name = st.one_of(st.sampled_from(names), st.from_regex(r"[a-z][a-z_.-]{0,10}", fullmatch=True))
  pair = st.tuples(name, VALUES)
  return st.one_of(
      pair.map(lambda t: [f"--{t[0]}={t[1]}"]), pair.map(lambda t: [f"--{t[0]}", t[1]]),
      name.map(lambda n: [f"--{n}"]), pair.map(lambda t: [f"-{t[0]}={t[1]}"]),
      name.map(lambda n: [f"--no{n}"]), VALUES.map(lambda v: [v]))


@st.composite
def _argv(draw, command: str, fixed: list[str]):
  groups = [[a] for a in fixed] + draw(st.lists(_tokens(FLAG_NAMES[command]), max_size=4))
  groups = draw(st.permutations(groups))
  argv = [a for g in groups for a in g]
  if command == "train":  # a --workdir would train: leave it out, in every spelling
    argv = [a for a in argv if "workdir" not in a]
  return command.split() + argv


def _check(argv: list[str], cwd) -> None:
  out, err = io.StringIO(), io.StringIO()
  # In a scratch folder: a random --out=NAME writes there, not into the checkout.
  with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      rc = cli.main(argv)
    except BaseException as e:  # noqa: BLE001 (the property: nothing escapes)
      pytest.fail(f"{argv!r} raised {type(e).__name__}: {e}\nstderr: {err.getvalue()}")
  assert rc in (0, 2), (argv, rc, err.getvalue())
  assert "Traceback" not in err.getvalue(), (argv, err.getvalue())
  if rc == 2:
    assert err.getvalue().startswith("error: "), (argv, err.getvalue())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """A ladder workdir with one good and one torn record, and a table that cannot be fitted."""
  from scaling.storage import write_json

  root = tmp_path_factory.mktemp("property")
  write_json(root / "w" / "runs" / "a" / "result.json", {
      "run_id": "a", "status": "complete", "params_non_embedding": 1e6, "tokens": 2e7,
      "final_eval_loss": 3.0, "flops": 1.2e14, "config": {}})
  (root / "w" / "runs" / "b").mkdir(parents=True)
  (root / "w" / "runs" / "b" / "result.json").write_text('{"run_id": "b", "sta')
  (root / "scratch").mkdir()
  (root / "one.csv").write_text("params,tokens,loss\n1e6,2e7,3.0\n")  # one row: never fitted
  return root


SETTINGS = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("command,fixed", [
    ("info", [f"--config={TINY}"]),
    ("train", [f"--config={TINY}"]),
    ("ladder show", [LADDER]),
    ("ladder status", ["{w}"]),
    ("results collect", ["{w}"]),
    ("fit", ["{one}"]),
    ("plan", ["--law=ratio20", "--flops=1e21"]),
])
def test_no_command_line_ends_in_a_traceback(command, fixed, files):
  fixed = [a.format(w=files / "w", one=files / "one.csv") for a in fixed]

  @SETTINGS
  @given(_argv(command, fixed))
  def check(argv):
    _check(argv, files / "scratch")

  check()
