"""The tpu-vm backend renders gcloud commands (gcloud itself is not installed in CI)."""

import shlex

from scaling import cli

TPU = ["--backend=tpu-vm", "--config.ladder.tpu_vm.name=my-v5e", "--config.ladder.tpu_vm.zone="
       "us-west4-a", "--config.ladder.tpu_vm.project=proj", "--config.ladder.tpu_vm.repo_dir="
       "~/scaling"]


def _lines(out):
  return [shlex.split(x) for x in out.splitlines() if x.startswith("gcloud")]


def test_dry_run_prints_one_ssh_to_all_workers(tmp_path, capsys, data_dir):
  work = str(tmp_path / "w")
  assert cli.main(["ladder", "run", "tests/ladder/tiny_ladder.py", f"--workdir={work}",
                   f"--config.run.data.data_dir={data_dir}", "--dry_run", *TPU]) == 0
  (cmd,) = _lines(capsys.readouterr().out)
  assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-v5e"]
  assert "--zone=us-west4-a" in cmd and "--project=proj" in cmd and "--worker=all" in cmd
  remote = next(c for c in cmd if c.startswith("--command="))[len("--command="):]
  assert remote.startswith("cd ~/scaling && ")
  workers = remote.split(" && ")[1:]
  assert len(workers) == 3
  assert all(w.startswith(f"python3 -m scaling.cli ladder worker {work} --run_id=ladder_d")
             for w in workers)


def test_queued_resource_is_requested_first(tmp_path, capsys, data_dir):
  assert cli.main(["ladder", "run", "tests/ladder/tiny_ladder.py", f"--workdir={tmp_path}",
                   f"--config.run.data.data_dir={data_dir}", "--dry_run", *TPU,
                   "--config.ladder.tpu_vm.queued_resource=True",
                   "--config.ladder.tpu_vm.accelerator_type=v5litepod-8",
                   "--config.ladder.tpu_vm.runtime_version=v2-alpha-tpuv5-lite",
                   "--config.ladder.tpu_vm.spot=True"]) == 0
  create, ssh = _lines(capsys.readouterr().out)
  assert create[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "my-v5e-qr"]
  assert "--node-id=my-v5e" in create and "--accelerator-type=v5litepod-8" in create
  assert "--spot" in create and ssh[4] == "ssh"


def test_without_gcloud_a_real_launch_says_so(tmp_path, capsys, data_dir, monkeypatch):
  monkeypatch.setenv("PATH", str(tmp_path / "empty"))
  code = cli.main(["ladder", "run", "tests/ladder/tiny_ladder.py", f"--workdir={tmp_path}",
                   f"--config.run.data.data_dir={data_dir}", *TPU])
  err = capsys.readouterr().err
  assert code == 2 and "gcloud is not installed" in err and "--dry_run" in err


def test_a_real_launch_runs_the_rendered_commands(tmp_path, capsys, data_dir, monkeypatch):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  log = tmp_path / "gcloud.log"
  fake = bin_dir / "gcloud"
  fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {log}\necho --- >> {log}\n')
  fake.chmod(0o755)
  monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
  assert cli.main(["ladder", "run", "tests/ladder/tiny_ladder.py", f"--workdir={tmp_path}/w",
                   f"--config.run.data.data_dir={data_dir}", *TPU]) == 0
  (printed,) = _lines(capsys.readouterr().out)
  assert log.read_text().split("\n---\n")[0].splitlines() == printed[1:]


def test_missing_tpu_name_is_a_clear_error(tmp_path, capsys, data_dir):
  code = cli.main(["ladder", "run", "tests/ladder/tiny_ladder.py", f"--workdir={tmp_path}",
                   f"--config.run.data.data_dir={data_dir}", "--backend=tpu-vm", "--dry_run"])
  assert code == 2 and "ladder.tpu_vm.name" in capsys.readouterr().err
