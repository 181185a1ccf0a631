"""Label signing keys: created by init (mode 0600), rotation, caching, online/offline checks."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmp_mes.audit import Actor
from labels import keys, services
from labels import payload as lp

EXPIRY = datetime(2027, 3, 4, 5, 6, tzinfo=UTC)


@pytest.mark.requirement("21 CFR 11.10(d)")
def test_key_is_created_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "signing_key.pem"
    old_umask = os.umask(0o000)  # even a permissive umask never widens the key
    try:
        lines = keys.ensure_key(path)
    finally:
        os.umask(old_umask)
    assert "created" in lines[0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.ensure_key(path)[0].startswith("signing key: ")  # idempotent, keeps the key
    ring = keys.keyring(path)
    assert keys.ensure_key(path) and keys.keyring(path).private_key is ring.private_key


def test_init_tightens_a_loose_key(tmp_path: Path) -> None:
    path = tmp_path / "signing_key.pem"
    keys.ensure_key(path)
    path.chmod(0o644)
    lines = keys.ensure_key(path)
    assert any("tightened" in line for line in lines)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_init_command_creates_the_key(app, runner) -> None:
    path = Path(app.config["GMP_SETTINGS"].signing_key)
    path.unlink()  # the test fixture made one; init must make it again
    result = runner.invoke(args=["init"])
    assert result.exit_code == 0, result.output
    assert "signing key: created" in result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rotation_keeps_old_labels_valid_and_signs_with_the_new_key(tmp_path: Path) -> None:
    path = tmp_path / "signing_key.pem"
    keys.ensure_key(path)
    before = keys.keyring(path)
    old_label = lp.sign(before.private_key, "FP", "ITM-ABCDEFGH", "A999926000001*", EXPIRY)
    retired_id, new_id = keys.rotate_key(path)
    assert retired_id == keys.key_id(before.current_public) and new_id != retired_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    after = keys.keyring(path)  # the cache notices the changed file
    assert keys.key_id(after.current_public) == new_id
    assert len(after.public_keys) == 2
    new_label = lp.sign(after.private_key, "FP", "ITM-ABCDEFGH", "A999926000001*", EXPIRY)
    assert new_label != old_label
    # old labels verify with the retired key, new ones with the current key only
    assert lp.parse_and_verify(old_label, after.public_keys)
    with pytest.raises(lp.InvalidLabel):
        lp.parse_and_verify(new_label, [before.current_public])
    assert lp.parse_and_verify(new_label, [after.current_public])
    keys.rotate_key(path)
    assert len(keys.keyring(path).public_keys) == 3


def test_keyring_is_cached_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "signing_key.pem"
    keys.ensure_key(path)
    assert keys.keyring(path) is keys.keyring(path)
    first = keys.keyring(path)
    keys.rotate_key(path)
    assert keys.keyring(path) is not first


def test_unusable_key_files_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(keys.SigningKeyError, match="gmp-mes init"):
        keys.keyring(tmp_path / "missing.pem")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(keys.SigningKeyError, match="not an unencrypted PEM"):
        keys.keyring(bad)
    with pytest.raises(keys.SigningKeyError, match="not a PEM public key"):
        keys.load_public(bad)


# --- online check (services) -----------------------------------------------------------


def test_check_payload_reasons(app, db) -> None:
    with app.app_context(), db.transaction(actor=Actor.system("test")) as s:
        good = services.sign_payload("FP", "ITM-ABCDEFGH", "A999926000001*", EXPIRY)
        check = services.check_payload(s, f"  {good.lower()}\r\n")
        assert check.ok and check.reasons == []
        assert check.payload is not None and check.payload.text == good
        assert check.payload.expires_at == EXPIRY

        assert services.check_payload(s, "garbage").reasons[0][0] == "malformed"
        assert services.check_payload(s, good[:-5]).reasons[0][0] == "malformed"
        assert services.check_payload(s, "").reasons[0][0] == "malformed"
        forged = lp.sign(
            Ed25519PrivateKey.generate(), "FP", "ITM-ABCDEFGH", "A999926000001*", EXPIRY
        )
        codes = [code for code, _ in services.check_payload(s, forged).reasons]
        assert codes == ["bad_signature"]


def test_services_work_without_an_application_context(app, db) -> None:
    """Scheduler threads and service tests hold a session but no app context."""
    with db.transaction(actor=Actor.system("test")) as s:
        good = services.sign_payload("WB", "ITM-ABCDEFGH", "A999926000001*", None)
        assert services.check_payload(s, good).ok


def test_verify_offline(app, tmp_path: Path) -> None:
    with app.app_context():
        good = services.sign_payload("FP", "ITM-ABCDEFGH", "A999926000001*", EXPIRY)
        public = tmp_path / "public.pem"
        public.write_text(keys.public_pem(services.keyring().current_public))
    parsed = services.verify_offline(good, [public])
    assert parsed.subject_id == "ITM-ABCDEFGH" and parsed.coi_id == "A999926000001*"
    with pytest.raises(lp.InvalidLabel):
        services.verify_offline(good.replace("ITM-ABCDEFGH", "ITM-ABCDEFGI"), [public])


# --- command line ------------------------------------------------------------------------


@pytest.mark.requirement("21 CFR 11.10(c)")
def test_cli_verify_offline_with_only_the_public_key(app, runner, tmp_path: Path) -> None:
    exported = runner.invoke(args=["labels", "public-key"])
    assert exported.exit_code == 0, exported.output
    assert exported.output.startswith("-----BEGIN PUBLIC KEY-----")
    public = tmp_path / "site.pub.pem"
    public.write_text(exported.output)
    with app.app_context():
        good = services.sign_payload("FP", "ITM-ABCDEFGH", "A999926000001*", EXPIRY)
    # The private key is gone: verification needs only the public key.
    Path(app.config["GMP_SETTINGS"].signing_key).unlink()
    result = runner.invoke(args=["labels", "verify", good, "--public-key", str(public)])
    assert result.exit_code == 0, result.output
    assert "valid label" in result.output
    assert "ITM-ABCDEFGH" in result.output
    assert "A9999 26 000001 [*]" in result.output
    assert "2027-03-04 05:06 UTC" in result.output
    assert "final product" in result.output

    tampered = good.replace(":202703040506:", ":202803040506:")
    result = runner.invoke(args=["labels", "verify", tampered, "--public-key", str(public)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("INVALID label (bad_signature)")

    result = runner.invoke(args=["labels", "verify", "hello", "--public-key", str(public)])
    assert result.exit_code == 1 and "INVALID label (malformed)" in result.output


def test_cli_rotate_then_verify_with_installation_keys(app, runner) -> None:
    with app.app_context():
        old = services.sign_payload("SM", "ITM-ABCDEFGH", "A999926000001*", EXPIRY)
    result = runner.invoke(args=["labels", "rotate-key"])
    assert result.exit_code == 0 and "signing key rotated" in result.output
    with app.app_context():
        new = services.sign_payload("SM", "ITM-ABCDEFGH", "A999926000001*", EXPIRY)
    assert new != old
    for label in (old, new):
        result = runner.invoke(args=["labels", "verify", label])
        assert result.exit_code == 0, result.output


def test_cli_verify_with_an_unreadable_key_is_one_line(runner, tmp_path: Path) -> None:
    result = runner.invoke(
        args=["labels", "verify", "GMP1:X", "--public-key", str(tmp_path / "none.pem")]
    )
    assert result.exit_code != 0
    assert "public key" in result.output and "Traceback" not in result.output


def test_cli_exports_all_public_keys_for_offline_checks(app, runner, tmp_path: Path) -> None:
    with app.app_context():
        old = services.sign_payload("FP", "ITM-ABCDEFGH", "A999926000001*", EXPIRY)
    assert runner.invoke(args=["labels", "rotate-key"]).exit_code == 0
    with app.app_context():
        new = services.sign_payload("FP", "ITM-ABCDEFGH", "A999926000001*", EXPIRY)
    current_only = tmp_path / "current.pem"
    current_only.write_text(runner.invoke(args=["labels", "public-key"]).output)
    every = tmp_path / "all.pem"
    exported = runner.invoke(args=["labels", "public-key", "--all"]).output
    assert exported.count("BEGIN PUBLIC KEY") == 2
    every.write_text(exported)
    args = ["labels", "verify"]
    assert runner.invoke(args=[*args, new, "--public-key", str(current_only)]).exit_code == 0
    assert runner.invoke(args=[*args, old, "--public-key", str(current_only)]).exit_code == 1
    assert runner.invoke(args=[*args, old, "--public-key", str(every)]).exit_code == 0
    assert services.verify_offline(old, [every]).text == old


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.text(max_size=400), st.binary(max_size=50).map(repr)))
def test_check_payload_never_raises_for_any_input(app, db, raw: str) -> None:
    with db.transaction(actor=Actor.system("test")) as s:
        result = services.check_payload(s, raw)
    assert result.reasons and result.reasons[0][0] in ("malformed", "bad_signature")
    assert not result.ok


def test_a_loose_key_is_used_but_reported(tmp_path: Path, caplog) -> None:
    path = tmp_path / "signing_key.pem"
    keys.ensure_key(path)
    path.chmod(0o644)
    keys.invalidate()
    with caplog.at_level("WARNING", logger="gmp_mes.labels"):
        keys.keyring(path)
    assert "readable by others" in caplog.text
