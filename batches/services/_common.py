"""Helpers the service modules share (not part of the domain's interface)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from batches.models import Batch, Deviation
from gmp_mes.errors import NotFound
from gmp_mes.models import User


def load_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user


def deviation_number(session: Session, batch: Batch) -> str:
    """The batch's next deviation number: CART-26-0001-D01, D02, ..."""
    count = session.scalar(select(func.count()).select_from(Deviation).where(
        Deviation.batch_id == batch.id
    )) or 0
    return f"{batch.batch_number}-D{count + 1:02d}"
