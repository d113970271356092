"""Studies spread over processes: a killed study resumed by the same command, two worker processes on one SQLite
study, and two workers filling one study on a real PostgreSQL server started for the test."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from automl_helpers import LR_SPACE, TINY, data_args, finished, read_trials, tkit, tkit_process

pytestmark = pytest.mark.slow  # child processes: seconds each


def _study_trials(url: str, name: str = "classification"):
    import optuna

    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def test_sigkill_then_the_same_command_resumes_keeping_finished_trials(digits, tmp_path):
    results = tmp_path / "killed"
    args = ["classification", "automl", "-r", results, *data_args(digits), *TINY, "train.epochs=3", LR_SPACE,
            "automl.max_trials=3", "automl.algorithm=random", "automl.pruner=none"]
    proc = tkit_process(*args, output=tmp_path / "first.txt")
    try:
        hang_guard = time.monotonic() + 600
        while not (results / "trial_0002").exists():  # trials 0 and 1 are done, trial 2 has just started
            assert proc.poll() is None, (tmp_path / "first.txt").read_text()[-3000:]
            assert time.monotonic() < hang_guard, "the study never reached its third trial"
            time.sleep(0.02)
        before = read_trials(results)
        proc.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert [r["state"] for r in before] == ["COMPLETE", "COMPLETE"]
    assert tkit(*args) == 0
    rows = read_trials(results)
    assert rows[:2] == before  # finished trials kept as they were: values, metric, seconds
    killed = rows[2]
    assert killed["state"] == "FAIL" and "ended without finishing it" in killed["reason"]
    retried = [r for r in rows if r["reason"] == "retry of trial 2"]
    assert len(retried) == 1 and retried[0]["train.learning_rate"] == killed["train.learning_rate"]
    assert len(rows) == 4 and sum(r["state"] == "COMPLETE" for r in rows) == 3


def test_two_worker_processes_share_one_sqlite_study(digits, tmp_path):
    results = tmp_path / "parallel"
    assert tkit("classification", "automl", "-r", results, *data_args(digits), *TINY, "train.epochs=2", LR_SPACE,
                "automl.max_trials=6", "automl.parallel=2", "automl.algorithm=random", "automl.pruner=none") == 0
    rows = read_trials(results)
    assert [int(r["number"]) for r in rows] == list(range(len(rows)))  # no number twice, none skipped
    assert 6 <= len(rows) <= 7 and all(r["state"] == "COMPLETE" for r in rows)  # two workers may both take the 6th
    trials = _study_trials(f"sqlite:///{results / 'study.db'}")
    assert len({t.user_attrs["pid"] for t in trials}) == 2, "both workers ran trials"
    assert len({t.user_attrs["dir"] for t in trials}) == len(trials)
    assert all((results / f"trial_{t.number:04d}" / "metrics.json").is_file() for t in trials)
    assert (results / "worker_1.log").is_file()


# -- PostgreSQL --------------------------------------------------------------------------------------

def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


@pytest.fixture
def postgres():
    """A PostgreSQL server on a Unix socket in a fresh /tmp folder (no TCP port), stopped and removed after."""
    bin_dir = _pg_bin()
    if bin_dir is None or not (bin_dir / "initdb").is_file():
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="tkit-pg-", dir="/tmp"))
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root)
            pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server as")
        os.chown(root, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    run = lambda *cmd: subprocess.run([*as_user, *map(str, cmd)], check=True, capture_output=True, text=True,
                                      timeout=120)
    run(bin_dir / "initdb", "-D", data, "-U", "tkit", "-A", "trust", "-E", "UTF8", "--no-sync")
    options = f"-k {root} -c listen_addresses='' -c fsync=off -c max_connections=40"
    run(bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", root / "server.log", "-w", "-t", "60", "start")
    try:
        yield f"postgresql://tkit@/postgres?host={root}"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_fill_one_study_on_a_postgresql_server(digits, tmp_path, postgres):
    results = tmp_path / "pg"
    args = ["classification", "automl", "-r", results, *data_args(digits), *TINY, "train.epochs=2", LR_SPACE,
            "automl.max_trials=4", "automl.algorithm=bayesian", "automl.pruner=none", f"automl.storage={postgres}", "automl.study_name=pg"]
    workers = [tkit_process(*args, output=tmp_path / f"worker{k}.txt") for k in range(2)]  # as on two machines
    codes = [finished(p, tmp_path / f"worker{k}.txt") for k, p in enumerate(workers)]
    assert codes == [0, 0]
    trials = _study_trials(postgres.replace("postgresql://", "postgresql+psycopg://"), "pg")
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(len(trials))) and 4 <= len(trials) <= 5
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert {t.user_attrs["pid"] for t in trials} == {p.pid for p in workers}
    assert not (results / "study.db").exists()  # the study lives in PostgreSQL
    assert len(read_trials(results)) == len(trials)


def test_sigterm_ends_the_study_cleanly_and_the_stopped_trial_is_run_again(digits, tmp_path):
    import signal

    results = tmp_path / "terminated"
    args = ["classification", "automl", "-r", results, *data_args(digits), *TINY, "train.epochs=3", LR_SPACE,
            "automl.max_trials=2", "automl.algorithm=random", "automl.pruner=none"]
    proc = tkit_process(*args, output=tmp_path / "out.txt")
    try:
        hang_guard = time.monotonic() + 600
        while not (results / "trial_0001" / "status.json").exists():  # trial 1 is training
            assert proc.poll() is None, (tmp_path / "out.txt").read_text()[-3000:]
            assert time.monotonic() < hang_guard, "the study never reached its second trial"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = (tmp_path / "out.txt").read_text()
    assert code == 143, output[-3000:]
    assert "Continue the study with the same command" in " ".join(output.split()) and "Traceback" not in output
    first, stopped, again = read_trials(results)
    assert first["state"] == "COMPLETE"
    assert stopped["state"] == "FAIL" and stopped["reason"] == "interrupted (SIGTERM)"
    assert again["state"] == "WAITING" and again["reason"] == "retry of trial 1"
    assert again["train.learning_rate"] == stopped["train.learning_rate"]
