"""Signed archives for 30-year retention (SPEC §17, issue 22): an archive verifies offline,
and fails after any byte of it changes or an event is removed, on both databases."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.test_batches_fixtures import Plant, plant_fixture  # noqa: F401
from validation import archive, signing
from validation.cli import archive_verify

pytestmark = [pytest.mark.requirement("EU GMP Annex 11 §17"),
              pytest.mark.requirement("21 CFR 11.10(b)"),
              pytest.mark.requirement("21 CFR 11.10(c)")]


def _batch_with_label(plant: Plant) -> tuple[str, str]:
    from labels import services as labels

    number = plant.start()
    plant.run_to(number, "transduction")
    batch = plant.batch(number)
    with plant.tx() as s:
        labels.print_label(s, batch.starting_item_id, labels.PrintRequest("zpl"),
                           user_id=plant.operator.user_id)
    return number, batch.coi_id


def _archive(runner: Any, tmp_path: Path, *args: str) -> bytes:
    out = tmp_path / f"{args[0]}-{args[1]}.zip"
    result = runner.invoke(args=["archive", *args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out.read_bytes()


def _events(data: bytes) -> list[dict[str, Any]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        lines = z.read(archive.EVENTS).decode().splitlines()
    return [json.loads(json.loads(line)["record"]) for line in lines]


def _public_keys(runner: Any, tmp_path: Path) -> Path:
    result = runner.invoke(args=["labels", "public-key", "--all"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "keys.pem"
    path.write_text(result.output)
    return path


def test_a_batch_archive_verifies_offline_and_holds_its_events(plant: Plant, runner: Any,
                                                               tmp_path: Path) -> None:
    number, _ = _batch_with_label(plant)
    other, _ = _batch_with_label(plant)  # another patient's batch stays out
    data = _archive(runner, tmp_path, "batch", number)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = set(z.namelist())
        record = json.loads(z.read(f"record/batch-{number}.json"))
        assert z.read(f"record/batch-{number}.pdf").startswith(b"%PDF")
    assert {archive.MANIFEST, archive.EVENTS, archive.CHAIN, archive.ANCHOR,
            archive.LABEL_KEYS, archive.README} <= names
    events = _events(data)
    kinds = {(e["entity_type"], e["action"]) for e in events}
    assert {("batch", "create"), ("step_record", "create"), ("signature", "create"),
            ("item", "create"), ("label", "create")} <= kinds
    mentioned = json.dumps(events)
    assert number in mentioned and other not in mentioned
    other_items = {r["item_id"] for r in _record_of(runner, tmp_path, other)["genealogy"]}
    assert not any(e["entity_id"] in other_items for e in events)
    assert record["batch_number"] == number

    # Offline: the command needs no application and no database.
    keys = _public_keys(runner, tmp_path)
    path = tmp_path / "a.zip"
    path.write_bytes(data)
    result = CliRunner().invoke(archive_verify, [str(path), "--public-key", str(keys)])
    assert result.exit_code == 0, result.output
    assert "by a trusted key" in result.output and f"batch {number} intact" in result.output


def _record_of(runner: Any, tmp_path: Path, number: str) -> dict[str, Any]:
    out = tmp_path / f"{number}.json"
    result = runner.invoke(args=["export", "batch", number, "--format", "json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_records_created_about_the_subject_are_followed(plant: Plant, runner: Any,
                                                        tmp_path: Path) -> None:
    """A label printed for the item is in, and so is its void (which names the label,
    not the item); another patient's label is not."""
    from labels import services as labels

    number, _ = _batch_with_label(plant)
    other, _ = _batch_with_label(plant)
    starting = plant.batch(number).starting_item_id
    with plant.tx() as s:
        [label] = labels.labels_of_item(s, starting)
        labels.void_label(s, starting, label.label_id, reason="smudged",
                          user=plant._user(s, plant.operator))
    with plant.tx() as s:
        [foreign] = labels.labels_of_item(s, plant.batch(other).starting_item_id)
    events = _events(_archive(runner, tmp_path, "batch", number))
    entities = {(e["entity_type"], e["entity_id"]) for e in events}
    assert ("label", label.label_id) in entities and ("label_void", label.label_id) in entities
    assert ("label", foreign.label_id) not in entities


def test_a_patient_archive_covers_every_batch_of_the_patient(plant: Plant, runner: Any,
                                                             tmp_path: Path) -> None:
    number, coi = _batch_with_label(plant)
    data = _archive(runner, tmp_path, "patient", coi)
    verified = archive.verify_archive(data)
    assert verified.subject == f"patient {coi}"
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert f"record/batch-{number}.json" in z.namelist()
        summary = json.loads(z.read(f"record/patient-{coi}.json"))
    assert summary["batches"] == [number]
    events = _events(data)
    assert ("patient", coi) in {(e["entity_type"], e["entity_id"]) for e in events}


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_any_changed_byte_fails_verification(plant: Plant, runner: Any,
                                             tmp_path: Path) -> None:
    number, _ = _batch_with_label(plant)
    data = _archive(runner, tmp_path, "batch", number)
    archive.verify_archive(data)
    size = len(data)
    # Headers, every file's content, the central directory and its end record.
    positions = sorted({*range(0, 64), *range(0, size, max(1, size // 400)),
                        *range(size - 200, size)})
    for position in positions:
        changed = bytearray(data)
        changed[position] ^= 0x01
        with pytest.raises(archive.ArchiveError):
            archive.verify_archive(bytes(changed))
    with pytest.raises(archive.ArchiveError):
        archive.verify_archive(data + b"\0")  # appended bytes
    with pytest.raises(archive.ArchiveError):
        archive.verify_archive(data[:-1])  # truncated


def _rezip(data: bytes, change: Any) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        files = {name: z.read(name) for name in z.namelist()}
    change(files)
    return archive.canonical_zip(files)


@pytest.mark.requirement("21 CFR 11.10(e)")
def test_a_removed_event_fails_verification(plant: Plant, runner: Any,
                                            tmp_path: Path) -> None:
    number, _ = _batch_with_label(plant)
    data = _archive(runner, tmp_path, "batch", number)

    def drop_event(files: dict[str, bytes]) -> None:
        lines = files[archive.EVENTS].splitlines(keepends=True)
        files[archive.EVENTS] = b"".join(lines[:3] + lines[4:])

    with pytest.raises(archive.ArchiveError, match=r"events\.jsonl was changed"):
        archive.verify_archive(_rezip(data, drop_event))

    def drop_event_and_fix_hashes(files: dict[str, bytes]) -> None:
        drop_event(files)
        manifest = json.loads(files[archive.MANIFEST])
        data_ = files[archive.EVENTS]
        manifest["files"][archive.EVENTS]["sha256"] = hashlib.sha256(
            data_).hexdigest()
        files[archive.MANIFEST] = json.dumps(manifest).encode()

    with pytest.raises(archive.ArchiveError, match="manifest signature"):
        archive.verify_archive(_rezip(data, drop_event_and_fix_hashes))

    # Re-signed by someone else's key: intact in itself, but not by a trusted key.
    forger = Ed25519PrivateKey.generate()

    def forge(files: dict[str, bytes]) -> None:
        drop_event(files)
        manifest = json.loads(files[archive.MANIFEST])
        manifest["files"][archive.EVENTS]["sha256"] = hashlib.sha256(
            files[archive.EVENTS]).hexdigest()
        dropped = json.loads(data_lines(data)[3])["seq"]
        manifest["events"].remove(dropped)
        files[archive.MANIFEST] = json.dumps(signing.sign_document(manifest, forger),
                                             indent=2, sort_keys=True).encode()

    forged = _rezip(data, forge)
    keys = signing.load_public_pems(_public_keys(runner, tmp_path).read_text())
    with pytest.raises(archive.ArchiveError, match="not a trusted key"):
        archive.verify_archive(forged, keys)
    # Without a trusted key the forged archive is self-consistent, which is why the
    # README says to compare the key id: the output names the (foreign) key.
    verified = archive.verify_archive(forged)
    assert verified.key_id == signing.key_id(forger.public_key()) and not verified.trusted

    # The CLI says so and exits 1.
    path = tmp_path / "forged.zip"
    path.write_bytes(forged)
    keys_file = _public_keys(runner, tmp_path)
    result = CliRunner().invoke(archive_verify, [str(path), "--public-key", str(keys_file)])
    assert result.exit_code == 1 and "NOT intact" in result.output


def data_lines(data: bytes) -> list[bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return z.read(archive.EVENTS).splitlines()


def test_an_unknown_batch_is_one_line_error(plant: Plant, runner: Any, tmp_path: Path) -> None:
    result = runner.invoke(args=["archive", "batch", "CART-99-9999", "--out",
                                 str(tmp_path / "x.zip")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert not (tmp_path / "x.zip").exists()
