"""Signed, self-contained archives of a batch or a patient, checkable offline for 30 years.

EU GMP Annex 11 §17 and §7, 21 CFR 11.10(b)(c), Regulation (EC) 1394/2007 Art. 15: ATMP
traceability data are kept for 30 years, through migrations, vendor changes and restores.
An archive is a plain ZIP (stored, not compressed) whose every file is listed with its
SHA-256 in a manifest signed with the installation key; it holds the executed record
(PDF and JSON), every audit event of the records involved, the hash links from the first
of them to the trail's head at that moment (the anchor), and the public keys. The format
is written down in README.txt inside each archive and in README.md ("Backup, restore and
archive"), so it can be read and checked without this software.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sqlalchemy import inspect, text
from sqlalchemy.orm import Session

from batches import export
from batches import services as batches
from gmp_mes import audit
from gmp_mes.clock import utcnow
from identity import services as identity
from validation import signing

FORMAT = "gmp-mes archive 1"
MANIFEST = "manifest.json"
EVENTS = "audit/events.jsonl"
CHAIN = "audit/chain.txt"
ANCHOR = "audit/anchor.txt"
LABEL_KEYS = "keys/label-public-keys.pem"
README = "README.txt"
Progress = Callable[[int], None]

README_TEXT = """\
gmp-mes archive (format "gmp-mes archive 1")

This ZIP file is a self-contained copy of GMP records. Every file is stored
uncompressed. To check it without gmp-mes:

1. manifest.json is UTF-8 JSON. "files" maps each other file of the ZIP to its
   SHA-256 (hex) and size. Recompute each hash; no file may be missing or extra.
2. "signature" in manifest.json is an Ed25519 signature (base64 "value") over the
   canonical JSON of manifest.json without its "signature" member: keys sorted,
   no whitespace, separators "," and ":", non-ASCII as UTF-8. "public_key" (PEM)
   says which key signed; "key_id" is the first 16 hex digits of the SHA-256 of
   the raw 32-byte public key. Trust it only after comparing the key id with the
   installation's key published outside the system.
3. audit/events.jsonl holds one JSON object per line: "seq", "record" (the event
   exactly as stored, a JSON text), "prev_hash" and "hash". For each event,
   hash = SHA-256 hex of the UTF-8 text prev_hash + record.
4. audit/chain.txt lists, one line per event from the first archived event to the
   anchor, "seq prev_hash hash" separated by single spaces: each line's prev_hash
   equals the previous line's hash, seq rises by one, every archived event appears
   with its own hashes, and the last line is the anchor.
5. audit/anchor.txt is "SEQ:HASH", the head of the audit trail when the archive
   was made. Compared with a head recorded outside the system ("gmp-mes audit
   head"), it proves that no event up to it was removed or changed.
6. record/ holds the executed records (PDF for people, JSON for programs);
   keys/ the public keys that verify the labels of these records.
"""


class ArchiveError(Exception):
    """The archive is not intact; the message names the first problem (one line)."""


@dataclass
class Involved:
    """The business keys of the records an archive covers, and the files it carries."""

    kind: str
    subject: str
    keys: set[str]
    files: dict[str, bytes] = field(default_factory=dict)


# --- which events -----------------------------------------------------------------------

def _like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _mentioning(connection: Any, keys: set[str]) -> list[Any]:
    patterns = sorted({f'%"{_like(k)}{end}%' for k in keys for end in ('"', "/", ":", "-")})
    clauses = " OR ".join(f"record LIKE :p{i} ESCAPE '\\'" for i in range(len(patterns)))
    return connection.execute(
        text(f"SELECT seq, record, prev_hash, hash, entity_type, entity_id, action "
             f"FROM audit_event WHERE {clauses} ORDER BY seq"),
        {f"p{i}": p for i, p in enumerate(patterns)},
    ).all()


MAX_ROUNDS = 4  # item → label → label void: the longest chain of references seen


def involved_events(session: Session, keys: Iterable[str]) -> list[dict[str, Any]]:
    """Every event about one of the records named by ``keys``.

    An event is about a record when it names its key as a whole JSON string (its entity
    id, or a reference such as an item's ``batch_number``) or as the start of a key built
    from it (``CART-26-0001/expansion/1/v1``, ``CART-26-0001:sterility:3``,
    ``CART-26-0001-D01``). Records created by such events are involved too: their keys
    are looked for in turn (a label printed for an item, then the label's void), and
    every later event of each of them is added (a signature, an alert acknowledged).
    Only records *created* in a found event are followed, never the subject of a
    free-standing event (the workstation of a refused scan), so no other patient's
    events come along.
    """
    connection = session.connection()
    found: dict[int, dict[str, Any]] = {}
    created: set[tuple[str, str]] = set()
    wanted: set[str] = set(keys)
    looked: set[str] = set()
    for _ in range(MAX_ROUNDS):
        todo = wanted - looked
        if not todo:
            break
        looked |= todo
        for seq, record, prev_hash, hash_, entity_type, entity_id, action in _mentioning(
                connection, todo):
            found[seq] = {"seq": seq, "record": record, "prev_hash": prev_hash, "hash": hash_}
            if action == "create":
                created.add((entity_type, entity_id))
                if not entity_id.isdigit():
                    wanted.add(entity_id)
    for entity_type, entity_id in sorted(created):
        # The columns selected, typed (mypy unpacks a Row as object).
        events = cast("Iterable[tuple[int, str, str, str]]", connection.execute(
            text("SELECT seq, record, prev_hash, hash FROM audit_event "
                 "WHERE entity_type = :t AND entity_id = :i"),
            {"t": entity_type, "i": entity_id}))
        for seq, record, prev_hash, hash_ in events:
            found.setdefault(seq, {"seq": seq, "record": record, "prev_hash": prev_hash,
                                   "hash": hash_})
    return [found[seq] for seq in sorted(found)]


def chain_links(session: Session, first: int, last: int,
                progress: Progress | None = None) -> list[tuple[int, str, str]]:
    rows = session.connection().execution_options(stream_results=True, yield_per=10_000).execute(
        text("SELECT seq, prev_hash, hash FROM audit_event WHERE seq BETWEEN :a AND :b "
             "ORDER BY seq"), {"a": first, "b": last})
    links = []
    for row in rows:
        links.append((row[0], row[1], row[2]))
        if progress is not None and len(links) % 1000 == 0:
            progress(1000)
    if progress is not None:
        progress(len(links) % 1000)
    return links


# --- what a batch and a patient are made of ---------------------------------------------

def _columns(obj: Any) -> dict[str, Any]:
    return {a.key: audit.jsonable(getattr(obj, a.key)) for a in inspect(obj).mapper.column_attrs}


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)
            + "\n").encode("utf-8")


def batch_contents(session: Session, batch_number: str) -> Involved:
    pdf, _ = export.export_batch(session, batch_number, "pdf")
    data, _ = export.export_batch(session, batch_number, "json")
    record = json.loads(data)
    number = record["batch_number"]
    keys = {number} | {row["item_id"] for row in record.get("genealogy") or []}
    return Involved("batch", number, keys, {
        f"record/batch-{number}.pdf": pdf,
        f"record/batch-{number}.json": data,
    })


def patient_contents(session: Session, coi_id: str) -> Involved:
    patient = identity.get_patient(session, coi_id.strip().upper())
    coi = patient.coi_id
    items = identity.items_of_coi(session, coi)
    collections = identity.collections_of(session, coi)
    numbers = [b.batch_number for b in batches.batches_of_coi(session, coi)]
    summary = {
        "patient": _columns(patient),
        "collections": [_columns(c) for c in collections],
        "items": [_columns(i) for i in items],
        "batches": numbers,
    }
    involved = Involved("patient", coi, {coi, *(i.item_id for i in items)},
                        {f"record/patient-{coi}.json": _json_bytes(summary)})
    for number in numbers:
        part = batch_contents(session, number)
        involved.keys |= part.keys
        involved.files.update(part.files)
    return involved


# --- writing ----------------------------------------------------------------------------

_EPOCH = (1980, 1, 1, 0, 0, 0)


def canonical_zip(files: dict[str, bytes]) -> bytes:
    """The one byte layout of an archive: entries in name order, manifest last, stored,
    fixed time stamp and permissions. ``verify`` rebuilds it and compares every byte, so
    a change anywhere in the file (a header, a comment, appended data) is found."""
    buffer = io.BytesIO()
    names = sorted(n for n in files if n != MANIFEST) + ([MANIFEST] if MANIFEST in files else [])
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.create_system = 3
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_STORED
            archive.writestr(info, files[name])
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_archive(session: Session, involved: Involved, *, created_by: str,
                  public_keys: list[Any], private_key: Any,
                  progress: Progress | None = None) -> bytes:
    """The archive's bytes. ``session`` must see one snapshot (see :func:`snapshot`)."""
    events = involved_events(session, involved.keys)
    anchor = audit.head(session.connection())
    if anchor is None or not events:
        raise ArchiveError(f"no audit events for {involved.kind} {involved.subject}")
    links = chain_links(session, events[0]["seq"], anchor.seq, progress)
    files = dict(involved.files)
    files[README] = README_TEXT.encode("utf-8")
    files[EVENTS] = "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n"
                            for e in events).encode("utf-8")
    files[CHAIN] = "".join(f"{s} {p} {h}\n" for s, p, h in links).encode("ascii")
    files[ANCHOR] = f"{anchor}\n".encode("ascii")
    files[LABEL_KEYS] = "".join(signing.public_pem(k) for k in public_keys).encode("ascii")
    manifest = {
        "format": FORMAT,
        "subject": {"kind": involved.kind, "id": involved.subject},
        "created_at": audit.format_time(utcnow()),
        "created_by": created_by,
        "anchor": str(anchor),
        "events": [e["seq"] for e in events],
        "label_key_ids": [signing.key_id(k) for k in public_keys],
        "files": {name: {"sha256": _sha256(data), "bytes": len(data)}
                  for name, data in sorted(files.items())},
    }
    signed = signing.sign_document(manifest, private_key)
    files[MANIFEST] = (json.dumps(signed, indent=2, ensure_ascii=False, sort_keys=True)
                       + "\n").encode("utf-8")
    return canonical_zip(files)


# --- checking (offline: no database, no application) ------------------------------------

@dataclass
class Verified:
    subject: str
    files: int
    events: int
    links: int
    anchor: str
    key_id: str
    trusted: bool

    def lines(self) -> list[str]:
        trust = ("by a trusted key" if self.trusted else
                 "(no --public-key given: compare this key id with the installation's)")
        return [
            f"manifest signature: good, key id {self.key_id} {trust}",
            f"files: {self.files}, every SHA-256 matches",
            f"audit events: {self.events}, each hash recomputed from its record",
            f"chain: {self.links} links, unbroken up to the anchor {self.anchor}",
            f"archive of {self.subject} intact",
        ]


def verify_archive(data: bytes, trusted: list[Any] | None = None) -> Verified:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        files = {info.filename: archive.read(info) for info in archive.infolist()}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, KeyError,
            RuntimeError, NotImplementedError, struct.error) as exc:
        # A damaged header can claim encryption or an unknown compression: all the same,
        # the file is not the archive that was written.
        raise ArchiveError(f"not a readable ZIP archive: {exc}") from exc
    if len(files) != len(archive.infolist()):
        raise ArchiveError("the ZIP lists a file name twice")
    try:
        manifest_bytes = files.pop(MANIFEST)
        manifest = json.loads(manifest_bytes)
    except KeyError:
        raise ArchiveError("no manifest.json") from None
    except ValueError as exc:
        raise ArchiveError(f"manifest.json is not JSON: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise ArchiveError(f"unknown archive format {manifest.get('format')!r}")
    if not isinstance(manifest.get("events"), list) or not isinstance(manifest.get("files"), dict):
        raise ArchiveError("manifest.json lacks its events or files")
    problem = signing.verify_document(manifest, trusted)
    if problem:
        raise ArchiveError(f"manifest signature: {problem}")
    listed = manifest["files"]
    for name in sorted(set(listed) | set(files)):
        if name not in files:
            raise ArchiveError(f"{name} is listed in the manifest but missing")
        if name not in listed:
            raise ArchiveError(f"{name} is in the archive but not in the manifest")
        if _sha256(files[name]) != listed[name]["sha256"]:
            raise ArchiveError(f"{name} was changed (SHA-256 differs from the manifest)")
    events, links, anchor = _check_chain(files, manifest)
    rebuilt = canonical_zip({**files, MANIFEST: manifest_bytes})
    if rebuilt != data:
        raise ArchiveError("the ZIP file itself was changed (its bytes differ from the "
                           "canonical layout of its signed content)")
    return Verified(f"{manifest['subject']['kind']} {manifest['subject']['id']}", len(files),
                    events, links, anchor, manifest["signature"]["key_id"], trusted is not None)


def _check_chain(files: dict[str, bytes], manifest: dict[str, Any]) -> tuple[int, int, str]:
    try:
        events = [json.loads(line) for line in files[EVENTS].decode("utf-8").splitlines()]
        links = [line.split(" ") for line in files[CHAIN].decode("ascii").splitlines()]
        anchor = audit.Anchor.parse(files[ANCHOR].decode("ascii"))
    except (KeyError, ValueError) as exc:
        raise ArchiveError(f"audit files unreadable: {exc}") from exc
    if [e["seq"] for e in events] != manifest["events"]:
        raise ArchiveError("the archived events differ from those the manifest lists")
    if str(anchor) != manifest["anchor"]:
        raise ArchiveError("the anchor differs from the manifest's")
    for event in events:
        if audit.chain_hash(event["prev_hash"], event["record"]) != event["hash"]:
            raise ArchiveError(f"event {event['seq']}: hash does not match its record")
        if json.loads(event["record"]).get("seq") != event["seq"]:
            raise ArchiveError(f"event {event['seq']}: its record carries another number")
    by_seq: dict[int, tuple[str, str]] = {}
    previous: tuple[int, str] | None = None
    for parts in links:
        if len(parts) != 3 or not parts[0].isdigit():
            raise ArchiveError(f"audit/chain.txt: malformed line {' '.join(parts)!r}")
        seq, prev_hash, hash_ = int(parts[0]), parts[1], parts[2]
        if previous is not None and (seq != previous[0] + 1 or prev_hash != previous[1]):
            raise ArchiveError(f"chain broken at event {seq}")
        by_seq[seq] = (prev_hash, hash_)
        previous = (seq, hash_)
    if previous is None or previous != (anchor.seq, anchor.hash):
        raise ArchiveError("the chain does not end at the anchor")
    for event in events:
        if by_seq.get(event["seq"]) != (event["prev_hash"], event["hash"]):
            raise ArchiveError(f"event {event['seq']} is not linked into the chain")
    return len(events), len(links), str(anchor)


def read_trusted_keys(path: Path) -> list[Any]:
    keys = signing.load_public_pems(path.read_text(encoding="ascii", errors="replace"))
    if not keys:
        raise ArchiveError(f"{path}: no Ed25519 public key (PEM) in it")
    return keys
