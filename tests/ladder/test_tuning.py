"""Per-rung hyperparameter sweeps: every variant is a run, each rung's best is marked, a rung whose
best LR sits at its sweep's edge is flagged under_tuned (table, ladder status, fit check)."""

import json
import math

import pytest

from scaling import cli
from scaling.errors import ScalingError
from scaling.fit import checks, provenance, variants
from scaling.fit.table import load_table
from scaling.ladder import runner, tuning
from scaling.ladder.spec import expand
from scaling.storage import write_json
from tests.helpers import run_cli


def _tuned(cfg, **tune):
  cfg.ladder.sweeps.iso.tune = tuning.tune(**tune)
  return expand(cfg)


def test_every_variant_is_a_run_and_x1_is_the_untuned_rung(tiny_ladder):
  plain = {r.label: r for r in expand(tiny_ladder)}
  rungs = _tuned(tiny_ladder, lr=(0.5, 1, 2))
  assert len(rungs) == 3 * len(plain) and len({r.run_id for r in rungs}) == len(rungs)
  for r in rungs:
    base = plain[r.config.ladder.rung]
    assert r.label == f"{base.label} lr x{r.config.ladder.lr_mult:g}"
    assert r.config.train.lr == pytest.approx(base.config.train.lr * r.config.ladder.lr_mult,
                                              rel=1e-3)
    # Same model, batch and steps; one group per rung, shared by its variants.
    assert (r.config.train.global_batch, r.config.train.steps) == (
        base.config.train.global_batch, base.config.train.steps)
    assert r.config.ladder.tune_group == base.config.ladder.tune_group
    if r.config.ladder.lr_mult == 1:
      assert r.run_id == base.run_id  # the rule's own run: the same folder as without a sweep
  assert len({r.config.ladder.tune_group for r in rungs}) == len(plain)


def test_batch_and_beta2_variants_keep_the_rungs_tokens(tiny_ladder):
  tiny_ladder.ladder.rules.max_batch = 0
  rungs = _tuned(tiny_ladder, batch=(1, 2), b2=(0.95, 0.99))
  d1 = [r for r in rungs if r.config.ladder.rung.endswith("d1")]
  assert sorted(r.label.split(" d1 ")[1] for r in d1) == [
      "B x1 b2 0.95", "B x1 b2 0.99", "B x2 b2 0.95", "B x2 b2 0.99"]
  one, two = (next(r for r in d1 if r.config.ladder.batch_mult == m and
                   r.config.train.b2 == 0.99) for m in (1.0, 2.0))
  assert two.config.train.global_batch == 2 * one.config.train.global_batch
  assert abs(two.counts["tokens"] / one.counts["tokens"] - 1) < 0.02  # D kept, steps halved
  assert one.config.ladder.tune_group == two.config.ladder.tune_group


@pytest.mark.parametrize("tune, message", [
    (dict(lr=(0.5, -1)), r"ladder.sweeps.iso.tune.lr=\(0.5, -1.0\): give distinct positive"),
    (dict(b2=(0.95, 1.5)), "tune.b2=.*values in \\(0, 1\\)"),
    # The batch multiple is 8 and max_batch 8: x0.5 rounds back to x1, one run under two labels.
    (dict(batch=(0.5, 1)), "ladder rung iso/C=4e\\+09 d1 B x0.5 and C=4e\\+09 d1 B x1 are the "
     "same run"),
])
def test_bad_sweeps_fail_before_anything_runs(tiny_ladder, tune, message):
  with pytest.raises(ScalingError, match=message):
    _tuned(tiny_ladder, **tune)


def test_holdout_rungs_name_the_rung_not_the_variant(tiny_ladder):
  tiny_ladder.ladder.sweeps.iso.holdout_rungs = ("C=4e+09 d3",)
  rungs = _tuned(tiny_ladder, lr=(0.5, 1, 2))
  assert sorted(r.label for r in rungs if r.holdout) == [
      "C=4e+09 d3 lr x0.5", "C=4e+09 d3 lr x1", "C=4e+09 d3 lr x2"]


def _rows(losses, mults=(0.5, 1, 2), group="g", batch=4096):
  return [dict(run_id=f"{group}{m:g}", tune_group=group, lr=0.01 * m, lr_mult=m,
               batch_tokens=batch, b2=0.95, loss=loss, params=1e3, tokens=1e5)
          for m, loss in zip(mults, losses, strict=True)]


def test_best_is_marked_and_an_edge_best_is_under_tuned():
  rows = (_rows([3.0, 2.9, 2.8], group="up") + _rows([2.7, 2.8, 2.9], group="down")
          + _rows([3.0, 2.5, 2.6], group="inside") + _rows([2.9, 2.8, math.nan], group="nan"))
  tuning.mark(rows)
  best = {r["tune_group"]: r["lr_mult"] for r in rows if r["sweep_best"]}
  assert best == {"up": 2, "down": 0.5, "inside": 1, "nan": 1}  # a diverged run is never best
  flags = {r["tune_group"]: r["under_tuned"] for r in rows}
  assert flags == {"up": "up", "down": "down", "inside": "", "nan": ""}
  assert tuning.warnings(rows) == [
      "warning: under_tuned: up2: its best LR (x2) is the top of its sweep: extend the LR "
      "sweep above x2",
      "warning: under_tuned: down0.5: its best LR (x0.5) is the bottom of its sweep: extend "
      "the LR sweep below x0.5"]
  # The LR edge is judged through the best's batch: a lone LR at another batch is no sweep.
  grid = _rows([2.9, 2.8, 2.7], batch=4096) + _rows([2.6], mults=(4,), batch=8192)
  tuning.mark(grid)
  assert [r["sweep_best"] for r in grid] == [0, 0, 0, 1] and grid[3]["under_tuned"] == ""


def _record(rid, group, mult, loss, n=1000.0, d=1e5):
  cfg = {"model": {"name": "x"}, "train": {"lr": 0.01 * mult, "global_batch": 8, "seq_len": 64,
                                           "b2": 0.95},
         "ladder": {"sweep": "iso", "tune_group": group, "lr_mult": mult, "batch_mult": 1.0}}
  return dict(run_id=rid, status="complete", config=cfg, params_non_embedding=n,
              params_total=n, params_active=n, tokens=d, flops=6 * n * d,
              final_eval_loss=loss)


def _sweep_workdir(root):
  for rid, group, mult, loss, n in (("a05", "ga", 0.5, 3.2, 1e3), ("a1", "ga", 1, 3.1, 1e3),
                                    ("a2", "ga", 2, 3.0, 1e3), ("b05", "gb", 0.5, 2.9, 2e3),
                                    ("b1", "gb", 1, 2.7, 2e3), ("b2", "gb", 2, 2.8, 2e3)):
    write_json(root / "runs" / rid / "result.json", _record(rid, group, mult, loss, n))
  return root


def test_collect_marks_the_table_and_the_fit_check_says_which_way(tmp_path, capfd):
  w = _sweep_workdir(tmp_path)
  code, _ = run_cli(capfd, ["results", "collect", str(w), f"--out={w}/t.jsonl"])
  rows = {r["run_id"]: r for r in map(json.loads, (w / "t.jsonl").read_text().splitlines())}
  assert code == 0 and set(tuning.COLUMNS) <= set(rows["a1"])
  assert [rid for rid, r in rows.items() if r["sweep_best"]] == ["a2", "b1"]
  assert {rid: r["under_tuned"] for rid, r in rows.items()} == {
      "a05": "up", "a1": "up", "a2": "up", "b05": "", "b1": "", "b2": ""}
  for table in (load_table(str(w)), load_table(str(w / "t.jsonl"))):  # workdir and file alike
    c = checks.check_under_tuned(None, table)
    assert not c["ok"] and c["detail"].startswith("3 of 6 runs are under-tuned (a2: its best "
                                                  "LR (x2) is the top of its sweep: extend "
                                                  "the LR sweep above x2)"), c


def test_fits_take_each_rungs_best_unless_all_variants(tmp_path):
  w = _sweep_workdir(tmp_path)
  table = load_table(str(w))

  def args(**kw):
    return type("Args", (), dict(dict(law="chinchilla", all_variants=False), **kw))

  best = variants.select(table, args())
  assert best.run_id == ["a2", "b1"] and "4 other variants left out" in best.notes[-1]
  assert len(variants.select(table, args(all_variants=True))) == 6
  assert len(variants.select(table, args(law="lr"))) == 6  # the LR law reads every variant
  dropped = provenance.trace_dropped(table, [], 0, best_only=True)
  assert [d["run_id"] for d in dropped] == ["a05", "a1", "b05", "b2"]
  assert "not its rung's best variant" in dropped[0]["reason"]


def test_ladder_status_shows_the_best_variant_and_warns(tiny_ladder, tmp_path, capfd):
  rungs = _tuned(tiny_ladder, lr=(0.5, 1, 2))
  runner.prepare(tmp_path, "tiny", rungs)
  # Finished variants: the d1 rung is best at x2 (top edge), d2 at x1; d3 not yet trained.
  for r in rungs:
    depth, mult = r.config.ladder.rung[-2:], r.config.ladder.lr_mult
    loss = {"d1": {0.5: 3.0, 1.0: 2.9, 2.0: 2.8}, "d2": {0.5: 2.8, 1.0: 2.6, 2.0: 2.7}}.get(
        depth, {}).get(mult)
    if loss is not None:
      write_json(tmp_path / "runs" / r.run_id / "result.json",
                 dict(run_id=r.run_id, status="complete", final_eval_loss=loss,
                      steps_done=r.config.train.steps))
  capfd.readouterr()
  assert cli.main(["ladder", "status", str(tmp_path)]) == 0
  out, err = capfd.readouterr()
  assert ("warning: under_tuned: iso/C=4e+09 d1 lr x2: its best LR (x2) is the top of its "
          "sweep: extend the LR sweep above x2") in err
  assert out.splitlines()[0].split()[-1] == "tune" and "best (under-tuned: up)" in out
  assert cli.main(["ladder", "status", str(tmp_path), "--json"]) == 0
  states = [json.loads(x) for x in capfd.readouterr().out.splitlines()]
  tune = {s["rung"]: s["tune"] for s in states if s["tune"] != "-"}
  assert tune == {"iso/C=4e+09 d1 lr x2": "best (under-tuned: up)",
                  "iso/C=4e+09 d2 lr x1": "best"}


def test_a_sweep_kind_without_variants_refuses_a_tune_block(tiny_ladder):
  from scaling.ladder.spec import wsd_sweep

  tiny_ladder.ladder.sweeps.w = wsd_sweep((1,), (2, 4))
  tiny_ladder.ladder.sweeps.w.tune = tuning.tune(lr=(0.5, 1))
  with pytest.raises(ScalingError, match=r"^ladder\.sweeps\.w\.tune: .*wsd"):
    expand(tiny_ladder)


def test_seeds_are_runs_of_one_rung_and_seed_0_is_the_untuned_run(tiny_ladder):
  plain = {r.label: r for r in expand(tiny_ladder)}
  rungs = _tuned(tiny_ladder, lr=(1, 2), seeds=3)
  assert len(rungs) == 6 * len(plain) and len({r.run_id for r in rungs}) == len(rungs)
  base_seed = tiny_ladder.run.train.seed
  for r in rungs:
    base = plain[r.config.ladder.rung]
    offset = r.config.train.seed - base_seed
    assert r.label.endswith(f"seed +{offset}") and offset in (0, 1, 2)
    assert r.config.ladder.tune_group == base.config.ladder.tune_group  # seeds share the rung
    if offset == 0 and r.config.ladder.lr_mult == 1:
      assert r.run_id == base.run_id
  with pytest.raises(ScalingError, match=r"tune.seeds=0: give a whole number of seeds"):
    _tuned(tiny_ladder, seeds=0)


def test_the_best_variant_is_the_best_mean_over_seeds_not_the_luckiest_seed():
  # x1's seeds: 2.5 (lucky), 2.9, 2.9 -> mean 2.767; x2's: 2.7, 2.7, 2.7 -> 2.7.
  rows = [dict(r, seed=s) for s, r in enumerate(_rows([2.5, 2.7], mults=(1, 2)))]
  rows += [dict(r, seed=s + 2, run_id=f"{r['run_id']}s{s}")
           for s in (1, 2) for r in _rows([2.9, 2.7], mults=(1, 2))]
  tuning.mark(rows)
  assert {(r["lr_mult"], r["sweep_best"]) for r in rows} == {(1, 0), (2, 1)}
  assert sum(r["sweep_best"] for r in rows) == 3  # every seed of the best variant


def _seed_workdir(root):
  # Rung a: lr x1 at seeds 0-2 (mean 3.1) and x2 at seed 0 (3.15); rung b: one seed.
  for rid, group, mult, seed, loss, n in (
      ("a1s0", "ga", 1, 0, 3.0, 1e3), ("a1s1", "ga", 1, 1, 3.1, 1e3),
      ("a1s2", "ga", 1, 2, 3.2, 1e3), ("a2s0", "ga", 2, 0, 3.15, 1e3),
      ("b1s0", "gb", 1, 0, 2.7, 2e3)):
    rec = _record(rid, group, mult, loss, n)
    rec["config"]["train"]["seed"] = seed
    write_json(root / "runs" / rid / "result.json", rec)
  return root


def test_fits_average_a_rungs_seeds_and_name_every_seed_run(tmp_path, capfd):
  w = _seed_workdir(tmp_path)
  table = load_table(str(w))
  args = type("Args", (), dict(law="chinchilla", all_variants=False))
  avg = variants.average_seeds(variants.select(table, args), args)
  assert avg.run_id == ["a1s0", "b1s0"] and list(avg.loss) == pytest.approx([3.1, 2.7])
  assert avg.extra["seeds"] == ["3", "1"] and avg.extra["seed_runs"][0] == "a1s0;a1s1;a1s2"
  assert float(avg.extra["loss_sd"][0]) == pytest.approx(0.1)
  assert "averaged each rung's seeds: 4 runs -> 2 rows" in avg.notes[-1]
  args.all_variants = True
  assert len(variants.average_seeds(table, args)) == 5  # --all-variants: every run
  runs = provenance.runs(avg, "fit")
  assert runs[0]["averaged_with"] == ["a1s1", "a1s2"] and "averaged_with" not in runs[1]
  # --drop-highest-loss drops a rung (all its seeds), as the fit does after averaging.
  dropped = provenance.trace_dropped(table, [], 1, best_only=True)
  assert [d["run_id"] for d in dropped] == ["a2s0", "a1s0", "a1s1", "a1s2"]
  # The CSV `results collect` writes loads and averages alike.
  code, _ = run_cli(capfd, ["results", "collect", str(w), f"--out={w}/t.csv"])
  args.all_variants = False
  again = variants.average_seeds(variants.select(load_table(str(w / "t.csv")), args), args)
  assert code == 0 and again.run_id == avg.run_id and list(again.loss) == list(avg.loss)


def test_status_shows_no_best_for_a_rung_swept_only_over_seeds():
  manifest = [dict(tune_group="g", params=1e3, tokens=1e5, lr=0.01, lr_mult=1.0,
                   global_batch=8, b2=0.95, seed=s) for s in (0, 1)]
  states = [dict(state="complete", eval_loss=loss, rung=f"iso/d1 seed +{s}")
            for s, loss in enumerate((2.9, 2.8))]
  assert tuning.mark_status(manifest, states) == []
  assert [s["tune"] for s in states] == ["-", "-"] and [s["sweep_best"] for s in states] == [1, 1]
  manifest[1]["lr"], manifest[1]["lr_mult"] = 0.02, 2.0  # two variants: the best is shown
  tuning.mark_status(manifest, states)
  assert [s["tune"] for s in states] == ["-", "best (under-tuned: up)"]


def test_seeds_leave_the_rungs_tune_group_as_it_was(tiny_ladder):
  # Workdirs of older versions (no seeds) keep their groups: seed +0 of a seeded sweep, and
  # every other seed, carry the group the plain rung has.
  plain = {r.label: r.config.ladder.tune_group for r in expand(tiny_ladder)}
  seeded = _tuned(tiny_ladder, seeds=2)
  assert {r.config.ladder.tune_group for r in seeded} == set(plain.values())
  assert all(r.config.ladder.tune_group == plain[r.config.ladder.rung] for r in seeded)
  # The base seed is hashed, as it always was: a ladder at another seed is other groups.
  tiny_ladder.run.train.seed += 7
  tiny_ladder.ladder.sweeps.iso.tune = None
  assert not {r.config.ladder.tune_group for r in expand(tiny_ladder)} & set(plain.values())
