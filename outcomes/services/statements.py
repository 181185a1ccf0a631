"""Outcome-agreement statements (issue 21): a patient's milestones evaluated from the
signed follow-up records (``outcomes.agreements``), signed by a clinician and kept; the
signature's digest binds the statement's content (21 CFR 11.70), JSON and PDF."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, current_app, has_app_context
from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes import audit
from gmp_mes.clock import utcnow
from gmp_mes.errors import Conflict, NotFound
from gmp_mes.localtime import local_and_utc, signature_line, zone
from gmp_mes.models import Meaning, User
from gmp_mes.settings import CONFIG_DIR
from gmp_mes.signatures import SignatureInput, sign, still_binds
from identity import services as identity
from outcomes.agreements import (
    Agreement,
    AgreementError,
    Assessment,
    evaluate,
    load_agreements,
    milestone_json,
)
from outcomes.models import AgreementStatement, FollowUpVisit
from outcomes.services.visits import current_records


class AgreementInvalid(Conflict):
    """A file of ``config/agreements`` is not valid: nothing is evaluated or signed under
    any agreement until it is fixed (the detail is one line naming the file and fields)."""

    code = "agreement_definition_invalid"


def agreement_dir(app: Flask | None = None) -> Path:
    """``config/agreements`` (``AGREEMENT_DIR`` in the app config overrides it)."""
    config = app.config if app is not None else (
        current_app.config if has_app_context() else {})
    if config.get("AGREEMENT_DIR"):
        return Path(config["AGREEMENT_DIR"])
    return CONFIG_DIR / "agreements"


def agreements(app: Flask | None = None) -> dict[str, Agreement]:
    """Every agreement, read and checked afresh (a file fixed takes effect at once); a bad
    file is refused here, at load, as a 409 problem naming the file and the fields, never
    halfway through an evaluation."""
    try:
        return load_agreements(agreement_dir(app))
    except AgreementError as exc:
        raise AgreementInvalid(
            f"outcome agreements refused: {exc}",
            errors={f"{exc.source}:{name}" if name else exc.source: [message]
                    for name, message in exc.errors}) from exc


def get_agreement(code: str) -> Agreement:
    found = agreements().get(code.strip().upper())
    if found is None:
        raise NotFound(f"no outcome agreement {code!r}")
    return found


def evaluate_patient(session: Session, coi_id: str, agreement: Agreement) -> dict[str, Any]:
    """The statement's content: the agreement, the patient by COI only, the infused batch
    of the agreement's process (the first), each milestone with status and evidence."""
    patient = identity.get_patient(session, coi_id)
    first = session.scalar(select(FollowUpVisit).where(
        FollowUpVisit.coi_id == patient.coi_id,
        FollowUpVisit.process_code == agreement.process)
        .order_by(FollowUpVisit.administered_at, FollowUpVisit.id).limit(1))
    records = [r for r in current_records(session, patient.coi_id)
               if first is not None and r.batch_number == first.batch_number]
    assessments = [Assessment(r.id, r.visit, r.assessed_at, r.response, r.alive, r.death_date)
                   for r in records]
    infused_at = None if first is None else first.administered_at
    return {
        "agreement": agreement.as_json(),
        "coi_id": patient.coi_id,
        "batch_number": None if first is None else first.batch_number,
        "infused_at": None if infused_at is None else audit.format_time(infused_at),
        "evaluated_at": audit.format_time(utcnow()),
        "milestones": [milestone_json(evaluate(m, infused_at, assessments))
                       for m in agreement.milestones],
        "records": [{"id": r.id, "visit": r.visit, "version": r.version,
                     "assessed_at": audit.format_time(r.assessed_at), "response": r.response,
                     "alive": r.alive,
                     "death_date": r.death_date.isoformat() if r.death_date else None,
                     "signature_digest": r.signature.content_digest}
                    for r in records],
    }


def issue_statement(session: Session, coi_id: str, code: str, *, user_id: int,
                    signature: SignatureInput) -> AgreementStatement:
    """Evaluate and sign (meaning ``approved``) the patient's statement under the agreement."""
    agreement = get_agreement(code)
    content = evaluate_patient(session, coi_id, agreement)
    signer = session.get(User, user_id)
    if signer is None:
        raise NotFound(f"no user {user_id}")
    signed = sign(session, signer, signature, entity_type="agreement_statement",
                  entity_id=f"{agreement.code}:{content['coi_id']}", content=content,
                  meanings={Meaning.APPROVED.value})
    statement = AgreementStatement(
        agreement_code=agreement.code, agreement_version=agreement.version,
        coi_id=content["coi_id"], batch_number=content["batch_number"],
        content=audit.canonical_json(content), content_digest=signed.content_digest,
        issued_by=user_id, issued_at=utcnow(), signature_id=signed.id)
    session.add(statement)
    session.flush()
    return statement


@dataclass(frozen=True)
class StatementView:
    statement: AgreementStatement
    binds: bool  # the signature's digest still matches the stored content

    @property
    def document(self) -> dict[str, Any]:
        return self.statement.document


def get_statement(session: Session, statement_id: int) -> StatementView:
    statement = session.get(AgreementStatement, statement_id)
    if statement is None:
        raise NotFound(f"no agreement statement {statement_id}")
    return StatementView(statement, still_binds(statement.signature,
                                                json.loads(statement.content)))


def statement_pdf(view: StatementView, timezone: str | None) -> bytes:
    """The signed statement as a one-page PDF a hospital sends to the payer."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    doc = view.document
    tz = zone(timezone)
    styles = getSampleStyleSheet()
    out = io.BytesIO()
    pdf = SimpleDocTemplate(out, pagesize=A4, title=f"Outcome statement {doc['coi_id']}",
                            invariant=True)
    agreement = doc["agreement"]
    rows = [["Milestone", "Due", "Status", "Evidence (follow-up records)"]]
    for m in doc["milestones"]:
        rows.append([m["name"], local_and_utc(m["due_at"], tz) if m["due_at"] else "",
                     m["status"].replace("_", " "), ", ".join(map(str, m["evidence"]))])
    table = Table(rows, repeatRows=1)
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.grey),
                               ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey)]))
    story = [
        Paragraph(f"Outcome statement: {agreement['name']}", styles["Title"]),
        Paragraph(f"Agreement {agreement['code']} version {agreement['version']}"
                  f"{' with ' + agreement['payer'] if agreement['payer'] else ''}; "
                  f"process {agreement['process']}", styles["Normal"]),
        Paragraph(f"Patient (COI) {doc['coi_id']}; batch {doc['batch_number'] or '-'}; "
                  f"infused {local_and_utc(doc['infused_at'], tz) if doc['infused_at'] else '-'}",
                  styles["Normal"]),
        Paragraph(f"Evaluated {local_and_utc(doc['evaluated_at'], tz)}", styles["Normal"]),
        Spacer(1, 12), table, Spacer(1, 12),
        Paragraph(f"Signed: {signature_line(view.statement.signature, tz, with_utc=True)}",
                  styles["Normal"]),
        Paragraph(f"SHA-256 of the signed content: {view.statement.content_digest}"
                  f" ({'intact' if view.binds else 'CHANGED SINCE SIGNING'})", styles["Normal"]),
    ]
    pdf.build(story)
    return out.getvalue()


def statements_of(session: Session, coi_id: str) -> list[AgreementStatement]:
    """The patient's signed statements, newest first."""
    return list(session.scalars(select(AgreementStatement)
                                .where(AgreementStatement.coi_id == coi_id)
                                .order_by(AgreementStatement.id.desc())))
