"""Rules of process master data (SPEC §3): loading definition files, QA's approval of a
version, what changed from the previous version, hold times and shelf lives.

Below identity and batches: identity asks here for a collection's hold time, batches
for the definition a batch follows. Services take a session, flush and never commit.
"""

from __future__ import annotations

import difflib
import json
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from flask import current_app, has_app_context
from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes import signatures
from gmp_mes.errors import Conflict, Forbidden, InvalidTransition, NotFound, conflict
from gmp_mes.models import Meaning, User
from gmp_mes.settings import CONFIG_DIR
from gmp_mes.signatures import SignatureInput
from processes.definitions import (
    ProcessDefinition,
    ProcessDefinitionError,
    from_canonical,
    load_directories,
)
from processes.models import ProcessApproval, ProcessVersion

DEFAULT_PROCESS = "CART-AUTO"


class ProcessLoadError(Conflict):
    code = "process_definition_invalid"


def _definition_dirs() -> list[Path | None]:
    if has_app_context():
        settings = current_app.config["GMP_SETTINGS"]
        return [settings.builtin_process_dir, settings.process_dir]
    return [CONFIG_DIR / "processes"]


@lru_cache(maxsize=64)
def _parse_stored(digest_: str, text_: str) -> ProcessDefinition:
    return from_canonical(json.loads(text_), source=f"stored definition {digest_[:12]}")


def definition_of(version: ProcessVersion) -> ProcessDefinition:
    """The validated definition a process version (and every batch bound to it) follows."""
    return _parse_stored(version.digest, version.definition)


def load_process_definitions(
    session: Session, directories: list[Path | None] | None = None
) -> list[str]:
    """Load every definition file, unapproved (the ``gmp-mes init`` hook).

    All files are validated before anything is written, so one bad file loads
    nothing. A code+version already loaded must be identical in substance: a
    master batch record never changes under the batches that follow it.
    """
    try:
        files = load_directories(directories if directories is not None else _definition_dirs())
    except ProcessDefinitionError as exc:
        raise ProcessLoadError(
            f"process definition refused, nothing loaded: {exc}",
            errors={f"{exc.source}:{name}" if name else exc.source: [message]
                    for name, message in exc.errors},
        ) from exc
    lines: list[str] = []
    pending: list[tuple[Path, ProcessDefinition]] = []
    for loaded in files:
        definition = loaded.definition
        existing = session.scalar(
            select(ProcessVersion).where(
                ProcessVersion.code == definition.code,
                ProcessVersion.version == definition.version,
            )
        )
        if existing is None:
            pending.append((loaded.path, definition))
        elif existing.digest != definition.digest:
            raise ProcessLoadError(
                f"{loaded.path}: {definition.code} version {definition.version} is already "
                f"loaded with different content (from {existing.source}); a loaded process "
                f"version never changes: give the changed file a new version number",
                errors={str(loaded.path): ["changed content for an already loaded version"]},
            )
        else:
            lines.append(
                f"process {existing.key}: unchanged "
                f"({'approved' if existing.approved else 'awaiting QA approval'})"
            )
    for path, definition in pending:
        session.add(ProcessVersion(
            code=definition.code, version=definition.version, name=definition.name,
            digest=definition.digest, definition=definition.canonical(), source=str(path),
        ))
        lines.append(f"process {definition.code}/v{definition.version}: loaded from {path} "
                     f"(awaiting QA approval)")
    session.flush()
    return lines


def list_processes(session: Session) -> list[ProcessVersion]:
    return list(session.scalars(
        select(ProcessVersion).order_by(ProcessVersion.code, ProcessVersion.version)
    ))


def definition_diff(session: Session, process: ProcessVersion) -> tuple[
        int | None, list[tuple[str, str]]]:
    """What changed from the process's previous version (the highest lower version of
    the same code), for QA to see before approving (EU GMP Chapter 4.3, change
    control): (previous version or None, [(" "|"+"|"-"|"@", line)]) of the validated
    definitions as indented JSON, unified with 3 lines of context."""
    previous = session.scalar(select(ProcessVersion).where(
        ProcessVersion.code == process.code, ProcessVersion.version < process.version,
    ).order_by(ProcessVersion.version.desc()).limit(1))
    if previous is None:
        return None, []

    def lines(text: str) -> list[str]:
        return json.dumps(json.loads(text), indent=2, sort_keys=True,
                           ensure_ascii=False).splitlines()

    diff = difflib.unified_diff(lines(previous.definition), lines(process.definition),
                                fromfile=f"v{previous.version}", tofile=f"v{process.version}",
                                lineterm="", n=3)
    out = []
    for line in diff:
        if line.startswith(("---", "+++")):
            continue
        out.append((line[:1] if line[:1] in "+-@" else " ", line[1:] if line[:1] != "@"
                    else line))
    return previous.version, out


def get_process_version(session: Session, code: str, version: int) -> ProcessVersion:
    found = session.scalar(select(ProcessVersion).where(
        ProcessVersion.code == code, ProcessVersion.version == version
    ))
    if found is None:
        raise NotFound(f"no process {code} version {version}")
    return found


def approve_process(
    session: Session, code: str, version: int, *, user_id: int, signature: SignatureInput
) -> ProcessVersion:
    """QA approves a loaded version with an e-signature (EU GMP Chapter 4.3)."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    if not user.has_role("qa"):
        raise Forbidden("approving a process version needs the role qa")
    process = session.scalar(select(ProcessVersion).where(
        ProcessVersion.code == code, ProcessVersion.version == version
    ).with_for_update())
    if process is None:
        raise NotFound(f"no process {code} version {version}")
    if process.approved:
        raise InvalidTransition(f"process {process.key} is already approved")
    signed = signatures.sign(
        session, user, signature, entity_type="process_version", entity_id=process.key,
        content={"process": process.key, "digest": process.digest},
        meanings={Meaning.APPROVED.value},
    )
    session.add(ProcessApproval(
        process_version_id=process.id, process_key=process.key, approved_by=user.id,
        approved_at=signed.signed_at, signature_id=signed.id,
    ))
    session.flush()
    session.refresh(process)
    return process


def newest_version(session: Session, code: str, *, approved_only: bool) -> ProcessVersion | None:
    statement = select(ProcessVersion).where(ProcessVersion.code == code)
    if approved_only:
        statement = statement.join(ProcessApproval)
    return session.scalar(statement.order_by(ProcessVersion.version.desc()).limit(1))


def newest_approved(session: Session, code: str) -> ProcessVersion:
    """The newest QA-approved version of ``code``: what a new batch or booking follows.
    NotFound when no version is loaded, 409 ``process_not_approved`` when none is
    approved yet."""
    newest = newest_version(session, code, approved_only=True)
    if newest is None:
        if newest_version(session, code, approved_only=False) is None:
            raise NotFound(f"no process {code}")
        raise conflict("process_not_approved",
                       f"no version of process {code} is approved by QA yet")
    return newest


def starting_material_hold_time(
    session: Session, process_code: str | None = None
) -> tuple[timedelta, tuple[str, ...]]:
    """Hold time and warn_before of the newest approved version (else the newest loaded).

    Before ``gmp-mes init`` loaded anything, the definition files themselves answer,
    so collections can be recorded on a fresh installation.
    """
    code = process_code or DEFAULT_PROCESS
    process = newest_version(session, code, approved_only=True) or newest_version(
        session, code, approved_only=False
    )
    if process is not None:
        definition = definition_of(process)
    else:
        try:
            candidates = [f.definition for f in load_directories(_definition_dirs())
                          if f.definition.code == code]
        except ProcessDefinitionError as exc:
            raise ProcessLoadError(str(exc)) from exc
        if not candidates:
            raise NotFound(f"no process definition {code}")
        definition = max(candidates, key=lambda d: d.version)
    return definition.starting_material_hold, definition.warn_before
