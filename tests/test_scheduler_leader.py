"""Scheduler hosting: exactly one active scheduler across processes (a lease in the
database that the leader renews), take-over when the leader dies, no scheduler in create_app,
`gmp-mes sweep` (issue 8, SPEC §8, §10)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from gmp_mes import create_app, registry
from gmp_mes.scheduler import SchedulerHost, run_jobs

VENV_BIN = Path(sys.executable).parent
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def counting_job(calls: list[str], name: str):
    def job(app):
        calls.append(name)
        return [f"{name} ran"]

    job.__name__ = name
    return job


def test_only_one_of_two_hosts_runs_jobs_and_the_standby_takes_over(app) -> None:
    calls: list[str] = []
    registry.of(app).jobs = [counting_job(calls, "job")]
    first, second = SchedulerHost(app), SchedulerHost(app)
    try:
        assert first.tick() == ["job ran"]
        assert second.tick() == []  # standing by
        assert first.tick() == ["job ran"]
        assert calls == ["job", "job"]
        first.stop()  # the leader goes away
        assert second.tick() == ["job ran"]
        assert first.tick() == []  # now the old leader is the standby
    finally:
        first.stop()
        second.stop()


def test_a_failing_job_does_not_stop_the_others(app, runner) -> None:
    calls: list[str] = []

    def broken(app_):
        raise RuntimeError("boom")

    registry.of(app).jobs = [broken, counting_job(calls, "after")]
    result = run_jobs(app)
    assert result.changes == ["after ran"] and len(result.failed) == 1
    out = runner.invoke(args=["sweep"])
    assert out.exit_code == 1
    assert "after ran" in out.output and "failed jobs" in out.output


def test_sweep_command_prints_changes_or_nothing(app, runner) -> None:
    registry.of(app).jobs = [lambda app_: []]
    out = runner.invoke(args=["sweep"])
    assert out.exit_code == 0 and "sweep: nothing changed" in out.output
    calls: list[str] = []
    registry.of(app).jobs = [counting_job(calls, "expire")]
    out = runner.invoke(args=["sweep"])
    assert out.exit_code == 0 and out.output.splitlines()[0] == "expire ran"


def test_create_app_never_starts_a_scheduler(app_config) -> None:
    before = {t.ident for t in threading.enumerate()}
    application = create_app(app_config)
    try:
        started = [t.name for t in threading.enumerate() if t.ident not in before]
        assert started == []
        assert "scheduler.lock" not in os.listdir(app_config["instance_path"])
    finally:
        application.extensions["gmp_mes.db"].dispose()


def test_a_leader_whose_lease_lapsed_stands_by_and_the_standby_takes_over(app, db) -> None:
    """Leadership is a lease it must renew: once it lapsed (here: ended in the database,
    as if the leader had been unable to renew), the standby takes over and the old
    leader, at its next tick, finds the lease taken and does not run as a second one."""
    calls: list[str] = []
    registry.of(app).jobs = [counting_job(calls, "job")]
    first, second = SchedulerHost(app), SchedulerHost(app)
    try:
        assert first.tick() == ["job ran"]
        assert second.tick() == []
        with db.engine.begin() as c:
            c.execute(text("UPDATE scheduler_lease SET expires_at = 0"))
        assert second.tick() == ["job ran"]  # lapsed: the standby takes over
        assert first.tick() == []  # the old leader finds it taken and stands by
        assert not first.leadership.held and second.leadership.held
        assert calls == ["job", "job"]
    finally:
        first.stop()
        second.stop()


def test_a_sweep_stops_when_the_lease_lapses_mid_round(app) -> None:
    calls: list[str] = []
    host = SchedulerHost(app)

    def lapse(app_):
        host.leadership._valid_until = 0.0  # the lease ran out during this job
        calls.append("first")
        return []

    registry.of(app).jobs = [lapse, counting_job(calls, "second")]
    try:
        host.tick()
        assert calls == ["first"]  # the second job is not run without the lease
    finally:
        host.stop()


# --- real processes -------------------------------------------------------------------------

class Proc:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.handle = log.open("w")
        self.process = subprocess.Popen(
            [str(VENV_BIN / "gmp-mes"), "scheduler"], env=env, stdout=self.handle,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text()

    def sweeps(self) -> int:
        return len(re.findall(rf"sweep done by active scheduler \(pid {self.pid}\)", self.text()))

    def wait_for(self, pattern: str, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.text()):
                return time.monotonic()
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not seen in the log of pid {self.pid}:\n{self.text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.handle.close()


@pytest.mark.slow
def test_two_scheduler_processes_one_sweeps_and_the_other_takes_over(
    database_url, tmp_path
) -> None:
    env = {
        **os.environ,
        "GMP_MES_DATABASE_URL": database_url,
        "GMP_MES_SWEEP_SECONDS": "1",
        "GMP_MES_INSTANCE_PATH": str(tmp_path / "instance"),
        "GMP_MES_SECRET_KEY": "test-secret",
        # The project's packages from this tree even if the editable install predates them.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                    os.environ.get("PYTHONPATH")])),
    }
    env.pop("GMP_MES_SMTP_URL", None)
    env.pop("GMP_MES_WEBHOOK_URL", None)
    leader = Proc(env, tmp_path / "a.log")
    standby = None
    try:
        leader.wait_for(rf"pid {leader.pid}\) is now the active scheduler")
        leader.wait_for(r"sweep done by active scheduler")  # the first sweep runs at once
        standby = Proc(env, tmp_path / "b.log")
        standby.wait_for(r"standing by")
        time.sleep(2.5)  # a few intervals side by side
        assert standby.sweeps() == 0, standby.text()
        assert len(re.findall("standing by", standby.text())) >= 2
        assert leader.sweeps() >= 3
        leader.process.kill()  # SIGKILL: no clean shutdown, the lock goes with the process
        leader.process.wait()
        killed_at = time.monotonic()
        took_over = standby.wait_for(rf"pid {standby.pid}\) is now the active scheduler")
        standby.wait_for(r"sweep done by active scheduler")
        # Within about one interval (1 s), plus the database noticing the dead session.
        assert took_over - killed_at < 5.0
        assert standby.sweeps() >= 1
    finally:
        leader.stop()
        if standby is not None:
            standby.stop()
    assert standby.process.returncode == 0  # SIGTERM: clean stop


@pytest.mark.slow
def test_serve_runs_the_scheduler_in_process(database_url, tmp_path) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "GMP_MES_DATABASE_URL": database_url,
        "GMP_MES_SWEEP_SECONDS": "1",
        "GMP_MES_INSTANCE_PATH": str(tmp_path / "instance"),
        "GMP_MES_SECRET_KEY": "test-secret",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                    os.environ.get("PYTHONPATH")])),
    }
    log = tmp_path / "serve.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [str(VENV_BIN / "gmp-mes"), "serve", "--port", str(port)], env=env,
            stdout=handle, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "sweep done" not in log.read_text():
                time.sleep(0.05)
            assert f"sweep done by active scheduler (pid {process.pid})" in log.read_text()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
                assert r.status == 200
                # A production WSGI server (waitress), not Werkzeug's development server.
                assert r.headers["Server"] == "gmp-mes"
        finally:
            process.terminate()
            process.wait(10)
