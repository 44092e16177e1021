"""Studies run again, in slices and on Ray: the same table every way, and no run's work is lost."""

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from ppvae import runs
from ppvae.cli import main
from ppvae.errors import ConfigError
from ppvae.studies import study, workers

STUDY = """
description = "tiny"
[data]
name = "digits"
binarize = "dynamic"
max_train = {max_train}
[model]
decoder = {{ hidden = [16] }}
[guide]
encoder = {{ hidden = [16] }}
[train]
epochs = {epochs}
batch_size = 50
[eval]
k = 4
[study]
vary = {{ "model.latent_dim" = [2, 3] }}
variants = {{ vae = [], ae = ["guide.family=delta"] }}
columns = ["test_nll", "test_elbo", "test_recon_mse"]
"""
NUMBERS = ["run", "test_nll", "test_elbo", "test_recon_mse", "folder"]


def write_study(tmp_path, epochs=1, max_train=100):
    path = tmp_path / "tiny.toml"
    path.write_text(STUDY.format(epochs=epochs, max_train=max_train))
    return str(path)


def table(folder):
    return [{k: row[k] for k in NUMBERS} for row in csv.DictReader(open(folder / "results.csv"))]


def test_the_same_command_again_keeps_finished_runs_and_resumes_stopped_ones(tmp_path, capsys):
    path = write_study(tmp_path)
    folder = study.run(path, out=tmp_path / "out", pool=workers.Pool(threads=1))
    first = table(folder)
    assert len(first) == 4
    stopped = folder / first[1]["folder"]
    (stopped / runs.METRICS).unlink()  # as if stopped after training, before its evaluation
    runs.write_status(stopped, "trained, not evaluated")
    stamps = {p: (p / runs.CHECKPOINT).stat().st_mtime_ns for p in folder.iterdir() if p.is_dir()}
    capsys.readouterr()
    assert study.run(path, out=tmp_path / "out", pool=workers.Pool(threads=1)) == folder
    assert table(folder) == first  # the evaluation is seeded: the same numbers
    assert capsys.readouterr().err.count("finished earlier, kept") == 3
    for run_dir, stamp in stamps.items():  # nothing retrained: the stopped run resumed at its last epoch
        assert (run_dir / runs.CHECKPOINT).stat().st_mtime_ns == stamp or run_dir == stopped
    with pytest.raises(ConfigError, match="holds a run with other settings.*train.epochs"):
        study.run(path, overrides=["train.epochs=2"], out=tmp_path / "out")  # refused before any run starts


def test_shards_merge_into_the_table_of_the_whole_study(tmp_path, capsys):
    path = write_study(tmp_path)
    whole = table(study.run(path, out=tmp_path / "whole", pool=workers.Pool(threads=1)))
    for i, out in ((1, "a"), (2, "b")):
        assert main(["run", path, "--shard", f"{i}/2", "--threads-per-run", "1", "--out", str(tmp_path / out)]) == 0
    a, b = tmp_path / "a" / "tiny-smoke", tmp_path / "b" / "tiny-smoke"
    assert not (a / "results.csv").exists()  # a shard writes no table
    assert len([p for p in a.iterdir() if p.is_dir()]) == len([p for p in b.iterdir() if p.is_dir()]) == 2
    with pytest.raises(ConfigError, match="2 of the study's 4 runs are not finished"):
        study.merge([a])
    assert main(["study", "merge", str(a), str(b), "--out", str(tmp_path / "merged")]) == 0
    assert table(tmp_path / "merged") == whole
    assert (tmp_path / "merged" / "curves.png").is_file()


def test_a_shard_keeps_a_run_with_the_runs_it_starts_from():
    root = Path("/studies/x")  # variant c starts from both a and b at its grid point
    jobs = [workers.Job(f"{v} {g}", {}, (), root / f"{v}{g}", g, needs)
            for g in ("p0", "p1", "p2") for v, needs in (("a", ()), ("b", ()), ("c", (root / f"a{g}", root / f"b{g}")))]
    slices = [workers.shard(jobs, i, 2) for i in (1, 2)]
    assert sorted(j.label for s in slices for j in s) == sorted(j.label for j in jobs)
    for s in slices:
        folders = {j.folder for j in s}
        assert all(n in folders for j in s for n in j.needs)
    assert [len(s) for s in slices] == [6, 3]


def test_bad_scale_out_options_are_refused_before_anything_starts(tmp_path, capsys, monkeypatch):
    path = write_study(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for options, message in ((["--shard", "3/2"], "must be i/n with 1 <= i <= n"),
                             (["--shard", "1-2"], "must be i/n"),
                             (["--gpus-per-run", "0.25"], "this machine has none"),
                             (["--address", "127.0.0.1:9"], "Cannot reach a Ray cluster at --address 127.0.0.1:9"),
                             (["--address", "nowhere"], "is not HOST:PORT")):
        assert main(["run", path, *options, "--out", str(tmp_path / "out")]) == 2, options
        assert message in capsys.readouterr().err, options
    assert not (tmp_path / "out").exists()
    assert main(["run", "quickstart", "--workers", "2"]) == 2
    assert "single run, not a study; drop --workers" in capsys.readouterr().err
    assert main(["run", "quickstart", "--threads-per-run", "1"]) == 2  # given, though equal to a count's minimum
    assert "drop --threads-per-run" in capsys.readouterr().err


@pytest.fixture(scope="module")
def longer_study(tmp_path_factory):
    """A study whose runs last a few seconds, and its table run one by one in this process."""
    tmp = tmp_path_factory.mktemp("longer")
    path = write_study(tmp, epochs=40, max_train=400)
    return path, table(study.run(path, out=tmp / "serial", pool=workers.Pool(threads=1)))


@pytest.mark.slow
def test_on_ray_a_killed_worker_resumes_and_the_table_is_the_same(longer_study, tmp_path):
    """Two Ray workers of one thread give the in-process table; a worker killed mid-run (SIGKILL)
    is retried by Ray and its run continues from its last checkpoint."""
    path, serial = longer_study
    folder = tmp_path / "tiny-smoke"
    killed = {}

    def kill_one_mid_run():
        while not killed:
            for run_dir in folder.glob("tiny-*") if folder.is_dir() else []:
                lock, epochs = run_dir / runs.LOCK, run_dir / runs.EPOCHS
                lines = len(epochs.read_text().splitlines()) if epochs.is_file() else 0
                pid = lock.read_text().strip() if lock.is_file() else ""
                if 3 <= lines < 30 and pid.isdigit() and int(pid) != os.getpid():
                    os.kill(int(pid), signal.SIGKILL)
                    killed.update(folder=run_dir, pid=pid)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_mid_run, daemon=True)
    killer.start()
    study.run(path, out=tmp_path, pool=workers.Pool(workers=2, threads=1))
    killed.setdefault("folder", None)
    assert killed["folder"] is not None, "no run was caught mid-training"
    assert table(folder) == serial
    resumed = killed["folder"]
    assert (resumed / runs.LOCK).read_text().strip() != killed["pid"]  # another process finished it
    assert [r["epoch"] for r in runs.read_jsonl(resumed / runs.EPOCHS)] == list(range(1, 41))


@pytest.mark.slow
def test_ctrl_c_on_the_driver_leaves_every_run_resumable(longer_study, tmp_path):
    """Ctrl-C stops a Ray study with each running run's exact position saved (exit 130); the same
    command again finishes the study with the table of an undisturbed one."""
    path, serial = longer_study
    folder = tmp_path / "tiny-smoke"
    command = [sys.executable, "-m", "ppvae.cli", "run", path, "--workers", "2", "--threads-per-run", "1",
               "--out", str(tmp_path)]
    driver = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=tmp_path)  # not ./ppvae of a checkout
    while not any(len(runs.read_jsonl(r / runs.EPOCHS)) >= 3 for r in folder.glob("tiny-*")):
        assert driver.poll() is None, driver.stderr.read()
        time.sleep(0.05)
    driver.send_signal(signal.SIGINT)
    err = driver.communicate(timeout=120)[1]
    assert driver.returncode == 130 and "run the same command again to continue" in err, err
    stopped = [r for r in folder.glob("tiny-*") if runs.read_jsonl(r / runs.EPOCHS)
               and not runs.evaluated(r)]
    statuses = [(r / runs.STATUS).read_text() for r in stopped]  # stopped in training, or in its evaluation
    assert stopped and all(t.startswith(("interrupted", "trained, not evaluated")) for t in statuses), statuses
    assert subprocess.run(command, capture_output=True, cwd=tmp_path).returncode == 0
    assert table(folder) == serial


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["point", "bayesian"])
def test_an_evaluation_split_over_ray_workers_gives_the_same_numbers(tmp_path, capsys, weights):
    """Slices of the test set evaluated in two worker processes draw what one evaluation draws (its
    tiles, and for Bayesian decoder weights the global draws of its first tile)."""
    tiny = ["data.max_train=200", "train.epochs=1", "eval.k=40", "eval.num_test=150", f"model.weights={weights}"]
    assert main(["run", "quickstart", *tiny, "--out", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.iterdir()
    one = runs.read_json(run_dir / runs.METRICS)
    assert main(["eval", str(run_dir), "--workers", "2", "--threads-per-run", "1"]) == 0
    two = runs.read_json(run_dir / runs.METRICS)
    keys = ["test_ll", "test_ll_se", "test_elbo", "test_recon_loglik", "test_kl", "khat_median", "ess_median",
            "eval_seed", "eval_points"]
    assert {key: two[key] for key in keys} == pytest.approx({key: one[key] for key in keys}, rel=1e-7)  # float32 sums
