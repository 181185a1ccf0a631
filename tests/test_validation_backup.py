"""Backup and restore (SPEC §17, issue 22), on both databases: a backup taken while the
application writes restores into an empty database and verifies; restore refuses a
database that is not empty; init refuses to make a new signing key for restored labels."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from gmp_mes import audit, create_app
from gmp_mes.audit import Actor
from gmp_mes.db import throwaway_engine
from tests.conftest import POSTGRES_URL
from tests.helpers import count
from tests.test_batches_fixtures import Plant, plant_fixture  # noqa: F401
from validation import backup

pytestmark = [pytest.mark.requirement("EU GMP Annex 11 §7"),
              pytest.mark.requirement("EU GMP Annex 11 §7.2"),
              pytest.mark.requirement("21 CFR 11.10(c)")]

WAIT_LIMIT = 120.0  # a bound on waiting for the writer thread, never an assertion on speed


@pytest.fixture
def empty_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A new, empty database of the same kind as the test's own."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored' / 'gmp_mes.sqlite'}"
        return
    assert POSTGRES_URL
    name = f"gmp_restore_{uuid.uuid4().hex[:10]}"
    admin = throwaway_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _target_app(app_config: dict[str, Any], url: str, instance: Path, *,
                with_key_of: Any = None) -> Any:
    config = app_config | {"database_url": url, "instance_path": str(instance)}
    if with_key_of is not None:
        key = Path(with_key_of.config["GMP_SETTINGS"].signing_key)
        instance.mkdir(parents=True, exist_ok=True)
        shutil.copy2(key, instance / key.name)
    target = create_app(config)
    target.config["TESTING"] = True
    return target


def _labelled(plant: Plant) -> str:
    from labels import services as labels

    item_id = plant.starting_material()
    with plant.tx() as s:
        labels.print_label(s, item_id, labels.PrintRequest("zpl"), user_id=plant.operator.user_id)
    return item_id


def _wait_for(condition: Any) -> None:
    deadline = time.monotonic() + WAIT_LIMIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the writer thread made no progress")
        time.sleep(0.005)


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_a_backup_during_concurrent_writes_restores_and_verifies(
        plant: Plant, app: Any, db: Any, runner: Any, app_config: dict[str, Any],
        empty_url: str, tmp_path: Path) -> None:
    _labelled(plant)
    stop, failures = threading.Event(), []
    acknowledged = [0]

    def writer() -> None:
        try:
            i = 0
            while not stop.is_set():
                i += 1
                with db.transaction(actor=Actor.system("probe")) as s:
                    audit.record(s, "probe.write", "probe", str(i), new={"i": i})
                acknowledged[0] = i  # committed: acknowledged to the "user"
        except Exception as exc:  # reported to the test below, never swallowed
            failures.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        _wait_for(lambda: acknowledged[0] >= 20 or failures)
        before = acknowledged[0]
        out = tmp_path / "backup.zip"
        result = runner.invoke(args=["backup", "--out", str(out)])
        assert result.exit_code == 0, result.output
        during = acknowledged[0]
        _wait_for(lambda: acknowledged[0] > during + 5 or failures)  # writers went on
    finally:
        stop.set()
        thread.join()
    assert not failures, failures
    description = backup.read_description(out)
    assert description["label_key_ids"] and description["signature"]["key_id"] in (
        description["label_key_ids"])
    assert "labels signed by key(s)" in result.output

    target = _target_app(app_config, empty_url, tmp_path / "instance2", with_key_of=app)
    try:
        restored = target.test_cli_runner().invoke(args=["restore", str(out)])
        assert restored.exit_code == 0, restored.output
        assert "audit trail intact" in restored.output
        target_db = target.extensions["gmp_mes.db"]
        with target_db.engine.connect() as c:
            probes = c.execute(text(
                "SELECT count(*) FROM audit_event WHERE entity_type = 'probe'")).scalar_one()
            assert audit.verify_chain(c).ok
            # The recorded head is in the restored trail, unchanged (then the restore event).
            assert audit.check_anchor(c, audit.Anchor.parse(description["audit_head"])) is None
        # Every write acknowledged before the backup started is in it (none lost), and the
        # backup is one consistent state: its recorded count is what was restored.
        assert probes >= before
        assert count(target_db, "audit_event") == description["audit_events"] + 1
        with target_db.engine.connect() as c:
            last = c.execute(text("SELECT action, entity_id FROM audit_event "
                                  "ORDER BY seq DESC LIMIT 1")).one()
        assert tuple(last) == ("database.restore", "backup.zip")  # the restore is recorded
        assert count(target_db, "label_print") == 1
        verify = target.test_cli_runner().invoke(args=["audit", "verify"])
        assert verify.exit_code == 0, verify.output
        # The key came along with the instance folder: init finds it and changes nothing.
        init = target.test_cli_runner().invoke(args=["init"])
        assert init.exit_code == 0, init.output
    finally:
        target.extensions["gmp_mes.db"].dispose()


def test_restore_refuses_a_database_that_is_not_empty(plant: Plant, app: Any, db: Any,
                                                      runner: Any, tmp_path: Path) -> None:
    _labelled(plant)
    out = tmp_path / "backup.zip"
    assert runner.invoke(args=["backup", "--out", str(out)]).exit_code == 0
    events = count(db, "audit_event")
    result = runner.invoke(args=["restore", str(out)])
    assert result.exit_code == 1 and "not empty" in result.output
    assert "Traceback" not in result.output
    assert count(db, "audit_event") == events  # nothing was touched
    with db.engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM audit_event WHERE action = "
                              "'database.backup'")).scalar_one() == 1


def test_postgresql_backup_without_pg_dump_is_one_clear_line(
        db: Any, runner: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if db.dialect != "postgresql":
        pytest.skip("pg_dump is for PostgreSQL only")
    monkeypatch.setattr(backup.shutil, "which", lambda _name: None)
    result = runner.invoke(args=["backup", "--out", str(tmp_path / "b.zip")])
    assert result.exit_code == 1
    [line] = [x for x in result.output.splitlines() if x.startswith("Error:")]
    assert "pg_dump not found" in line and "Traceback" not in result.output
    assert not (tmp_path / "b.zip").exists()


@pytest.mark.requirement("21 CFR 11.70")
def test_init_refuses_a_new_key_for_labels_signed_by_a_missing_one(
        plant: Plant, app: Any, runner: Any, app_config: dict[str, Any], empty_url: str,
        tmp_path: Path) -> None:
    _labelled(plant)
    out = tmp_path / "backup.zip"
    assert runner.invoke(args=["backup", "--out", str(out)]).exit_code == 0
    target = _target_app(app_config, empty_url, tmp_path / "fresh-instance")
    try:
        cli = target.test_cli_runner()
        restored = cli.invoke(args=["restore", str(out)])
        assert restored.exit_code == 0, restored.output
        assert "not present here" in restored.output
        key = Path(target.config["GMP_SETTINGS"].signing_key)
        init = cli.invoke(args=["init"])
        assert init.exit_code == 1 and "no new key was created" in init.output
        assert not key.exists()
        # With the key file restored from the instance backup, init goes through.
        shutil.copy2(app.config["GMP_SETTINGS"].signing_key, key)
        assert cli.invoke(args=["init"]).exit_code == 0
    finally:
        target.extensions["gmp_mes.db"].dispose()


def test_a_damaged_backup_is_refused(plant: Plant, runner: Any, app_config: dict[str, Any],
                                     empty_url: str, tmp_path: Path) -> None:
    import zipfile

    _labelled(plant)
    out = tmp_path / "backup.zip"
    assert runner.invoke(args=["backup", "--out", str(out)]).exit_code == 0
    with zipfile.ZipFile(out) as z:
        files = {name: z.read(name) for name in z.namelist()}
    payload = next(n for n in files if n != backup.DESCRIPTION)
    files[payload] = files[payload][:-1] + bytes([files[payload][-1] ^ 1])
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(damaged, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    target = _target_app(app_config, empty_url, tmp_path / "instance3")
    try:
        result = target.test_cli_runner().invoke(args=["restore", str(damaged)])
        assert result.exit_code == 1 and "damaged backup" in result.output
    finally:
        target.extensions["gmp_mes.db"].dispose()
