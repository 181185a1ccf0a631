"""The gmp-mes command line: one clear line and a non-zero exit for every error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import count

GMP_MES = str(Path(sys.executable).with_name("gmp-mes"))


def run_cli(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [GMP_MES, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {"GMP_MES_DATABASE_URL": database_url, "GMP_MES_INSTANCE_PATH": str(tmp_path)}


@pytest.mark.slow
def test_init_sites_users_and_verify_end_to_end(cli_env) -> None:
    assert run_cli("init", env=cli_env).returncode == 0
    again = run_cli("init", env=cli_env)
    assert again.returncode == 0, again.stderr  # idempotent
    created = run_cli(
        "sites", "create", "hosp1", "--kind", "treatment", "--name", "Hospital 1", env=cli_env
    )
    assert created.returncode == 0 and "HOSP1" in created.stdout
    user = run_cli(
        "users",
        "create",
        "nina",
        "--role",
        "clinician",
        "--role",
        "admin",
        "--site",
        "HOSP1",
        "--password-stdin",
        env=cli_env,
        stdin="a-long-password\n",
    )
    assert user.returncode == 0, user.stderr
    assert "admin, clinician" in user.stdout
    verify = run_cli("audit", "verify", env=cli_env)
    assert verify.returncode == 0 and "intact" in verify.stdout


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GMP_MES_FACILITY_ID": "12"}, "GMP_MES_FACILITY_ID"),
        ({"GMP_MES_DATABASE_URL": "postgresql://x/y"}, "postgresql+psycopg"),
        ({"GMP_MES_SWEEP_SECONDS": "soon"}, "GMP_MES_SWEEP_SECONDS"),
        ({"GMP_MES_TIMEZONE": "Mars/Olympus"}, "GMP_MES_TIMEZONE"),
    ],
)
def test_bad_setting_is_one_line(tmp_path, env, expected) -> None:
    result = run_cli("audit", "verify", env={"GMP_MES_INSTANCE_PATH": str(tmp_path), **env})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_domain_error_is_one_line(runner, make_site) -> None:
    make_site("CLEAN1")
    result = runner.invoke(
        args=["sites", "create", "CLEAN1", "--kind", "treatment", "--name", "dup"]
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["Error: site CLEAN1 already exists"]


def test_validation_error_names_the_field(runner, make_site) -> None:
    make_site("CLEAN1")
    result = runner.invoke(
        args=[
            "users",
            "create",
            "bad name!",
            "--role",
            "qa",
            "--site",
            "CLEAN1",
            "--password-stdin",
        ],
        input="short\n",
    )
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert "username" in line and "password" in line


@pytest.mark.requirement("21 CFR 11.10(d)")
def test_unknown_site_refused(runner, db) -> None:
    result = runner.invoke(
        args=["users", "create", "zed", "--role", "qa", "--site", "NOWHERE", "--password-stdin"],
        input="long-enough-password\n",
    )
    assert result.exit_code == 1 and "NOWHERE" in result.output
    assert count(db, "app_user") == 0


def test_unlock_and_deactivate(runner, make_user, db) -> None:
    make_user("olga", "operator")
    assert runner.invoke(args=["users", "deactivate", "olga"]).exit_code == 0
    assert runner.invoke(args=["users", "unlock", "olga"]).exit_code == 0
    assert runner.invoke(args=["users", "unlock", "nobody"]).exit_code == 1


def test_maintenance_commands_run_without_the_request_timeouts(app, db) -> None:
    """Requests are bounded by statement_timeout; `audit verify` and archives of a
    30-year trail are not (they use maintenance_database)."""
    from sqlalchemy import text

    from gmp_mes.cli import maintenance_database

    if db.dialect != "postgresql":
        pytest.skip("SQLite has no statement timeout")
    with db.engine.connect() as c:
        assert c.execute(text("SHOW statement_timeout")).scalar() != "0"
    with app.app_context(), maintenance_database() as long:
        assert long is not db
        with long.engine.connect() as c:
            assert c.execute(text("SHOW statement_timeout")).scalar() == "0"
