"""`scaling results collect`: run records -> the CSV / JSON-lines table the fitting module reads."""

import csv
import json

from scaling import cli
from scaling.ladder.results import COLUMNS
from scaling.storage import write_json


def _record(run_id, n, d, loss, status="complete", budget=None, experts=None):
  cfg = {"model": {"name": "x"}, "ladder": {"budget": budget, "granularity": 1}}
  if experts:
    cfg["model"]["moe"] = {"num_experts": experts}
  return dict(run_id=run_id, status=status, config=cfg, params_non_embedding=n,
              params_total=n + 100, params_active=n + 100, tokens=d, flops=6.0 * n * d,
              final_eval_loss=loss if status == "complete" else None, entropy_floor=0.9,
              wall_time_s=1.5)


def _workdir(tmp_path):
  for rec in (_record("b", 2000, 10_000, 3.0, budget=1.2e8),
              _record("a", 1000, 20_000, 3.5, budget=1.2e8, experts=8),
              _record("c", 4000, 5000, None, status="failed", budget=1.2e8)):
    write_json(tmp_path / "runs" / rec["run_id"] / "result.json", rec)
  (tmp_path / "runs" / "d").mkdir()  # a run that never wrote a record
  return tmp_path


def test_collect_writes_the_documented_csv_atomically(tmp_path, capsys):
  w = _workdir(tmp_path)
  out = tmp_path / "results.csv"
  assert cli.main(["results", "collect", str(w), f"--out={out}"]) == 0
  assert "2 runs" in capsys.readouterr().out
  rows = list(csv.DictReader(out.open()))
  assert tuple(rows[0].keys()) == COLUMNS
  assert [r["run_id"] for r in rows] == ["a", "b"]  # sorted by (budget, N, D)
  a = rows[0]
  assert (a["params"], a["tokens"], a["loss"], a["experts"], a["budget"]) == (
      "1000", "20000", "3.5", "8", "120000000.0")
  assert rows[1]["experts"] == "1" and rows[1]["status"] == "complete"
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".results")]  # no temp left


def test_collect_json_lines_and_all_runs(tmp_path, capsys):
  w = _workdir(tmp_path)
  out = tmp_path / "t.jsonl"
  assert cli.main(["results", "collect", str(w), f"--out={out}", "--all"]) == 0
  capsys.readouterr()
  rows = [json.loads(x) for x in out.read_text().splitlines()]
  assert {r["status"] for r in rows} == {"complete", "failed"} and len(rows) == 3
  assert cli.main(["results", "collect", str(w)]) == 0  # CSV on stdout
  captured = capsys.readouterr()
  assert captured.out.splitlines()[0] == ",".join(COLUMNS)
  assert "1 incomplete" in captured.err


def test_collected_table_loads_in_the_fitting_module(tmp_path):
  from scaling.fit.table import load_table

  w = _workdir(tmp_path)
  out = tmp_path / "results.csv"
  assert cli.main(["results", "collect", str(w), f"--out={out}"]) == 0
  table = load_table(str(out))
  assert len(table) == 2 and list(table.params) == [1000.0, 2000.0]
  assert list(table.optional["budget"]) == [1.2e8, 1.2e8]


def test_collect_errors(tmp_path, capsys):
  assert cli.main(["results", "collect", str(tmp_path / "nope")]) == 2
  assert "nope: no such directory" in capsys.readouterr().err
  assert cli.main(["results", "collect", str(tmp_path)]) == 2  # a folder that holds no runs
  assert "has no runs/ folder" in capsys.readouterr().err
  assert cli.main(["results", "gather", str(tmp_path)]) == 2


def test_out_with_a_space_as_the_readme_writes_it(tmp_path, capsys):
  w = _workdir(tmp_path)
  out = tmp_path / "spaced.csv"
  assert cli.main(["results", "collect", str(w), "--out", str(out)]) == 0  # was "Missing value"
  assert f"2 runs -> {out}" in capsys.readouterr().out
  assert len(list(csv.DictReader(out.open()))) == 2
  assert cli.main(["results", "collect", "--out", str(out), "--all", str(w)]) == 0  # any order
  assert len(list(csv.DictReader(out.open()))) == 3


def _torn(tmp_path):
  """The `_workdir` ladder plus one complete run whose result.json was cut mid-write."""
  w = _workdir(tmp_path)
  text = json.dumps(_record("e", 8000, 2500, 2.5, budget=1.2e8))
  (w / "runs" / "e").mkdir()
  (w / "runs" / "e" / "result.json").write_text(text[: len(text) // 2])
  return w, str(w / "runs" / "e" / "result.json")


def test_unreadable_records_are_named_counted_and_refused_with_strict(tmp_path, capsys):
  w, torn = _torn(tmp_path)
  out = tmp_path / "r.csv"
  assert cli.main(["results", "collect", str(w), f"--out={out}"]) == 0
  captured = capsys.readouterr()
  assert f"warning: {torn}: not valid JSON (Expecting" in captured.err
  assert "2 runs" in captured.out and "1 unreadable result.json skipped" in captured.out
  assert len(list(csv.DictReader(out.open()))) == 2
  assert cli.main(["results", "collect", str(w), "--strict", f"--out={tmp_path}/s.csv"]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"error: {torn}: not valid JSON") and "--strict" in err
  assert not (tmp_path / "s.csv").exists()


def test_fit_reads_a_workdir_by_the_same_rule(tmp_path, capsys):
  from scaling.fit.table import load_table

  w, torn = _torn(tmp_path)
  table = load_table(str(w))  # was: a ScalingError for the whole folder
  err = capsys.readouterr().err
  assert f"warning: {torn}: not valid JSON" in err
  assert "2 complete runs read; 1 runs not complete left out; 1 unreadable result.json" in err
  assert sorted(table.run_id) == ["a", "b"]
  assert "1 unreadable result.json skipped" in table.notes
  assert cli.main(["fit", str(w), "--strict", "--bootstrap=0"]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"error: {torn}: not valid JSON") and "--strict" in err


def test_a_workdir_its_collected_csv_and_a_reordered_copy_load_alike(tmp_path):
  """Rows come in run-id order whatever order the source lists them in, so a fit, whose
  bootstrap draws rows by index, gives one law from a workdir, its `results collect` CSV (sorted
  by budget, N, D) or a reordered copy of either."""
  from scaling.fit.table import load_table

  for rid, n in (("z", 1000), ("y", 2000), ("a", 4000), ("m", 8000)):
    write_json(tmp_path / "runs" / rid / "result.json",
               _record(rid, n, 10_000, 3.0 + 1000 / n, budget=1e9))
  out = tmp_path / "results.csv"
  assert cli.main(["results", "collect", str(tmp_path), f"--out={out}"]) == 0
  assert [r["run_id"] for r in csv.DictReader(out.open())] == ["z", "y", "a", "m"]
  lines = out.read_text().splitlines()
  reordered = tmp_path / "reordered.csv"
  reordered.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
  tables = [load_table(str(p)) for p in (tmp_path, out, reordered)]
  for t in tables:
    assert t.run_id == ["a", "m", "y", "z"]
    assert list(t.params) == [4000.0, 8000.0, 2000.0, 1000.0]
    assert list(t.loss) == list(tables[0].loss)
