"""Provenance: fit.json records where its law came from, and the fields round-trip through
`scaling plan --law=fit.json`."""

import hashlib
import importlib.metadata
import json
import os

import numpy as np
import pytest

from scaling import cli
from scaling.commands import fit as fit_cli
from scaling.fit import chinchilla, provenance, validation
from scaling.fit import plan as plan_lib
from scaling.fit.core import Fit
from scaling.fit.table import Table
from scaling.train import identity
from tests.fit.fake_ladder import FLOOR, TRUE, ladder_rows, write_ladder

pytestmark = pytest.mark.xla_optimized  # batched L-BFGS fits: run-bound (tests/conftest.py)


def _sha(path) -> str:
  return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def written(tmp_path):
  """fit.json for a fake ladder workdir, as `scaling fit` writes it, with the known law as
  the fitted one (provenance does not depend on the optimiser, which is tested elsewhere)."""
  work = write_ladder(tmp_path / "work", ladder_rows())
  argv = [work, "--holdout-above=2e11", "--seed=3", f"--out={tmp_path / 'fit'}"]
  args = fit_cli.parse_fit_args(argv)
  sp = validation.split(fit_cli._load(args), args.holdout_above)
  fit = chinchilla.add_derived(Fit("chinchilla", 3, "grid", dict(TRUE), n_points=15), 1e12)
  fit.provenance = provenance.from_args(args, fit, sp)
  path = str(tmp_path / "fit" / "fit.json")
  provenance.write_fit_json(path, fit.to_json(include_samples=True))
  return work, path, argv


def test_provenance_fields(written, tmp_path):
  work, path, argv = written
  prov = json.loads(open(path).read())["provenance"]
  inp = prov["input"]
  assert inp["kind"] == "workdir" and inp["path"] == os.path.abspath(work)
  # The records hash is the one `sha256sum` gives for `scaling results collect --out`.
  table = tmp_path / "collected.jsonl"
  assert cli.main(["results", "collect", work, f"--out={table}"]) == 0
  assert inp["sha256"] == _sha(table)
  files = {f["path"]: f["sha256"] for f in inp["files"]}
  assert files["runs/rung03/result.json"] == _sha(os.path.join(work, "runs/rung03/result.json"))
  assert "runs/rung03/metrics.jsonl" in files
  roles = {r["run_id"]: r["role"] for r in prov["runs"]}
  assert list(roles.values()).count("fit") == 15 and roles["rung20"] == "held_out"
  assert list(roles.values()).count("held_out") == 6
  ident = {r["run_id"]: r["config_identity"] for r in prov["runs"]}
  assert ident["rung00"] == "cfg-rung00"  # as recorded in result.json
  # Not recorded (a run from before identities): the training code's rule on its config.json.
  cfg = json.loads(open(os.path.join(work, "runs/rung01/config.json")).read())
  assert ident["rung01"] == identity.identity_hash(cfg) != ident["rung02"]
  assert prov["data"] == [{"name": "synthetic", "spec": {"support_exponent": 2.0},
                           "entropy_floor": FLOOR, "floor_formula": "H = -sum w log w",
                           "runs": 21}]
  assert prov["dropped"] == [{"row": None, "run_id": "rung21",
                              "reason": "status 'failed': no final loss"}]
  assert prov["filters"]["holdout_above"] == 2e11
  assert prov["command"]["argv"] == ["scaling", "fit", *argv]
  sw = prov["software"]
  assert sw["version"] == importlib.metadata.version("scaling")
  assert sw["git_commit"] is None or len(sw["git_commit"]) == 40
  assert prov["fit"] == {"law": "chinchilla", "approach": 3, "method": "grid", "seed": 3,
                         "bootstrap": 1000, "resample": "runs"}
  assert os.listdir(os.path.dirname(path)) == ["fit.json"]  # written aside and renamed


def test_round_trip_through_plan(written, capsys):
  _, path, _ = written
  obj = json.loads(open(path).read())
  back = plan_lib.LawSource(path).fit
  assert back.provenance == obj["provenance"]
  assert Fit.from_json(obj).to_json()["provenance"] == obj["provenance"]
  assert fit_cli.plan_main(["--flops=1e12", f"--law={path}"]) == 0
  lines = capsys.readouterr().out.splitlines()
  (line,) = [ln for ln in lines if "provenance:" in ln]
  sha = obj["provenance"]["input"]["sha256"][:12]
  assert f"from 15 runs (+6 held out) of workdir {obj['provenance']['input']['path']}" in line
  assert sha in line and "1 rows dropped" in line and f"data floor {FLOOR:.4g}" in line
  assert "chinchilla approach 3 grid seed 3" in line
  assert fit_cli.plan_main(["--flops=1e12", f"--law={path}", "--json"]) == 0
  assert "provenance: from 15 runs" in json.loads(capsys.readouterr().out)["provenance_summary"]


def test_dropped_rows_follow_the_loader():
  """`trace_dropped` names exactly the rows `--filter` then `--drop-highest-loss` remove."""
  n = np.geomspace(1e6, 1e8, 8)
  loss = np.array([3.0, 2.9, 2.8, 9.0, 2.6, 2.5, 8.0, 2.3])
  raw = Table(n, 20 * n, loss, {}, [f"r{i}" for i in range(8)],
              {"exp": ["a", "b"] * 4})
  kept = raw.where(exp="a").drop_highest_loss(1)
  dropped = provenance.trace_dropped(raw, ["exp=a"], 1)
  assert sorted(kept.run_id + [d["run_id"] for d in dropped]) == raw.run_id
  assert dropped[0] == {"row": 2, "run_id": "r1", "reason": "--filter exp=a: exp='b'"}
  assert dropped[-1] == {"row": 7, "run_id": "r6",
                         "reason": "--drop-highest-loss=1: loss 8"}


def test_software_outside_git_and_old_fit_json(monkeypatch, tmp_path):
  monkeypatch.setenv("PATH", str(tmp_path))  # no git executable: no failure, no commit
  sw = provenance.software()
  assert sw["git_commit"] is None and sw["git_dirty"] is None and sw["package"] == "scaling"
  assert provenance.summary({"law": "chinchilla"}).startswith("provenance: none recorded")
