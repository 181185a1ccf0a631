"""The material master: materials that process steps name by code (SPEC §11)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes.errors import AlreadyExists, NotFound, field_error
from materials.models import Material, MaterialKind
from processes.definitions import MATERIAL_CODE

KINDS = tuple(kind.value for kind in MaterialKind)


def create_material(
    session: Session, *, code: str, name: str, kind: str, unit: str, storage: str | None = None,
    user_id: int,
) -> Material:
    """A new material of the master (qa, admin at the edge). The code is the one process
    definitions name (``processes.definitions.MATERIAL_CODE``): upper case, 1-32 long."""
    code = (code or "").strip().upper()
    if not MATERIAL_CODE.fullmatch(code):
        raise field_error("code", "1-32 characters: A-Z, 0-9, '.', '_' or '-', starting with "
                                  "a letter or digit (the code process steps name)")
    if kind not in KINDS:
        raise field_error("kind", f"must be one of: {', '.join(KINDS)}")
    if not (name or "").strip():
        raise field_error("name", "must not be empty")
    if not (unit or "").strip():
        raise field_error("unit", "must not be empty")
    if session.get(Material, code) is not None:
        raise AlreadyExists(f"material {code} exists already",
                            errors={"code": [f"{code} exists already"]})
    material = Material(code=code, name=name.strip(), kind=kind, unit=unit.strip(),
                        storage=(storage or "").strip() or None, created_by=user_id)
    session.add(material)
    session.flush()
    return material


def get_material(session: Session, code: str) -> Material:
    material = session.get(Material, (code or "").strip().upper())
    if material is None:
        raise NotFound(f"no material {code!r}")
    return material


def list_materials(session: Session) -> list[Material]:
    """Every material, by code."""
    return list(session.scalars(select(Material).order_by(Material.code)))
