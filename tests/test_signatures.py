"""Electronic signatures: password re-entry, meaning, binding (21 CFR 11.50, 11.70, 11.200)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from gmp_mes.accounts import get_user
from gmp_mes.audit import Actor
from gmp_mes.clock import clock, utcnow
from gmp_mes.errors import RateLimited, SignatureRejected, ValidationFailed
from gmp_mes.models import Site
from gmp_mes.signatures import SignatureInput, sign, still_binds
from tests.helpers import count


def sign_site_rename(db, person, password: str, meaning: str = "approved") -> None:
    """Rename a site and sign the new content, in one unit of work."""
    with db.transaction(actor=person.actor) as s:
        site = s.scalar(select(Site).where(Site.code == "CLEAN1"))
        site.name = "Renamed"
        user = get_user(s, person.username)
        sign(
            s,
            user,
            SignatureInput(password, meaning, "test"),
            entity_type="site",
            entity_id="CLEAN1",
            content={"code": site.code, "name": site.name},
        )


@pytest.mark.requirement("21 CFR 11.50")
@pytest.mark.requirement("21 CFR 11.70")
def test_signature_records_name_time_meaning_and_digest(db, make_user) -> None:
    qa = make_user("quinn", "qa")
    sign_site_rename(db, qa, qa.password)
    with db.session() as s:
        from gmp_mes.models import Signature

        signature = s.scalar(select(Signature))
        assert signature.printed_name == "Quinn"
        assert signature.meaning == "approved"
        assert signature.signed_at.tzinfo is not None
        assert "Quinn (quinn)" in signature.manifestation()
        assert still_binds(signature, {"code": "CLEAN1", "name": "Renamed"})
        assert not still_binds(signature, {"code": "CLEAN1", "name": "Renamed again"})


@pytest.mark.requirement("21 CFR 11.200(a)")
def test_wrong_password_signs_nothing_and_changes_nothing(db, make_user) -> None:
    qa = make_user("quinn", "qa")
    events_before = count(db, "audit_event")
    with pytest.raises(SignatureRejected) as caught:
        sign_site_rename(db, qa, "not-my-password")
    assert count(db, "signature") == 0
    assert count(db, "audit_event") == events_before
    with db.session() as s:
        assert s.scalar(select(Site.name).where(Site.code == "CLEAN1")) != "Renamed"
    # The boundary then records the failure in its own transaction; it counts toward lockout.
    with db.transaction(actor=Actor.system("security")) as s:
        caught.value.follow_up(s)
    with db.session() as s:
        assert get_user(s, "quinn").failed_logins == 1


@pytest.mark.requirement("21 CFR 11.300(d)")
def test_five_wrong_signature_passwords_lock_the_account(db, make_user) -> None:
    qa = make_user("quinn", "qa")
    clock.freeze(utcnow())
    counted = 0
    while counted < 5:
        try:
            sign_site_rename(db, qa, "nope")
        except RateLimited as limited:  # 21 CFR 11.300(d): wait out the failed-password limit
            clock.advance(timedelta(seconds=limited.extra["retry_after"] + 1))
            continue
        except SignatureRejected as rejected:
            with db.transaction(actor=Actor.system("security")) as s:
                rejected.follow_up(s)
            counted += 1
    with db.session() as s:
        assert get_user(s, "quinn").locked_at is not None


def test_meaning_must_be_allowed(db, make_user) -> None:
    qa = make_user("quinn", "qa")
    with pytest.raises(ValidationFailed) as caught, db.transaction(actor=qa.actor) as s:
        sign(
            s,
            get_user(s, "quinn"),
            SignatureInput(qa.password, "performed"),
            entity_type="site",
            entity_id="CLEAN1",
            content={},
            meanings={"approved"},
        )
    assert "signature.meaning" in caught.value.errors
