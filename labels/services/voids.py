"""Voiding a printed copy and replacing a damaged one (a new serial, marked REPRINT) in
one transaction; for users of the item's current site and QA (403 ``wrong_site``)."""

from __future__ import annotations

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from gmp_mes import audit
from gmp_mes.accounts import Person
from gmp_mes.errors import Forbidden, NotFound, conflict, field_error
from labels.models import LabelPrint, LabelVoid
from labels.services._common import canonical, subjects
from labels.services.printing import PrintedLabel, PrintRequest, prepare, printed, validate_request
from labels.services.records import LabelRecord, labels_of_item, printable_id


class WrongSite(Forbidden):
    """Voids and replacements of an item's labels: its current site's users and QA."""

    code = "wrong_site"


def _check_site(item_site: str | None, item_id: str, user: Person, what: str) -> None:
    """Only the people where the item is (its current site) and QA may void or replace
    its labels: elsewhere nobody can see which physical copy is damaged."""
    if user.has_role("qa"):
        return
    user_site = user.site.code if user.site is not None else None
    if user_site is None or user_site != item_site:
        raise WrongSite(
            f"{what} the labels of {item_id} is for users of its current site "
            f"{item_site or '-'} and QA; you are at {user_site or 'no site'}"
        )


def _locked_copy(
    session: Session, item_id: str, item_site: str | None, label_id: str, user: Person, what: str
) -> LabelPrint:
    """The copy's row, locked until commit, after the site rule; never an already voided one."""
    label = session.execute(
        select(LabelPrint)
        .where(
            LabelPrint.label_id == canonical(label_id),
            LabelPrint.item_id == canonical(item_id),
        )
        .with_for_update()
    ).scalar_one_or_none()
    if label is None:
        raise NotFound(f"no label {printable_id(label_id)} for item {printable_id(item_id)}")
    _check_site(item_site, item_id, user, what)
    if session.execute(select(exists().where(LabelVoid.label_id == label.label_id))).scalar_one():
        raise conflict("already_voided", f"label {label.label_id} is already voided")
    return label


def _required_reason(reason: str | None, what: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise field_error("reason", f"{what} a label needs a reason")
    return reason


def _void(session: Session, label: LabelPrint, reason: str, user_id: int) -> None:
    with audit.reason(session, reason):
        session.add(
            LabelVoid(
                label_id=label.label_id,
                payload_digest=label.payload_digest,
                reason=reason,
                voided_by=user_id,
            )
        )
        session.flush()


def void_label(
    session: Session, item_id: str, label_id: str, *, reason: str | None, user: Person
) -> LabelRecord:
    """Void one printed copy: its payload fails every online check from now on; the
    item's other copies stay valid (21 CFR 11.10(e): the void is a new record)."""
    reason = _required_reason(reason, "voiding")
    item = subjects().subject(session, item_id)
    label = _locked_copy(session, item.item_id, item.site_code, label_id, user, "voiding")
    _void(session, label, reason, user.id)
    return next(r for r in labels_of_item(session, item.item_id) if r.label_id == label.label_id)


def replace_label(
    session: Session,
    item_id: str,
    label_id: str,
    *,
    reason: str | None,
    request: PrintRequest,
    user: Person,
) -> PrintedLabel:
    """Void a damaged or lost copy and print its replacement (a new serial, marked
    REPRINT) in one step: both recorded and audited in this transaction, or neither."""
    reason = _required_reason(reason, "replacing")
    request = validate_request(
        PrintRequest(**{**request.__dict__, "copies": 1, "reprint": True, "reason": reason})
    )
    # Lock order: the item row (as every print does), then the copy's row.
    item = subjects().subject(session, item_id, for_update=True)
    label = _locked_copy(session, item.item_id, item.site_code, label_id, user, "replacing")
    _void(session, label, f"replaced: {reason}", user.id)
    print_request = PrintRequest(
        **{**request.__dict__, "reason": f"replaces {label.label_id}: {reason}"}
    )
    with audit.reason(session, print_request.reason):
        labels, views = prepare(
            session, item.item_id, print_request, user.id, replaces=label.label_id
        )
        session.flush()
    return printed(labels, views, print_request)
