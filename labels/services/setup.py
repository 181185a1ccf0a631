"""Label setup per site (issue 15): the stock each kind of label is printed on and the
networked label printers (admin; audited), with the printers' time limits."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app, has_app_context
from sqlalchemy import select
from sqlalchemy.orm import Session

from gmp_mes.errors import NotFound, ValidationFailed, conflict, field_error
from gmp_mes.models import Site
from labels import render
from labels.models import LabelPrinter, LabelStock

LABEL_KINDS = ("final_product", "starting_material", "intermediate", "qc_sample",
               "retention_sample", "wristband", "material_lot", "equipment")
# The stock kind of an asset label (SPEC §11) by its payload kind code.
ASSET_STOCK_KINDS = {"LOT": "material_lot", "EQP": "equipment"}


def stock_for(session: Session, site_code: str | None, kind: str) -> str:
    """The stock the site loads for this kind of label (default 4 x 2 inch)."""
    if site_code is None:
        return render.DEFAULT_STOCK
    chosen = session.scalar(select(LabelStock.stock).where(
        LabelStock.site_code == site_code, LabelStock.kind == kind))
    return chosen or render.DEFAULT_STOCK


def stocks_of(session: Session, site_code: str) -> dict[str, str]:
    chosen = dict(session.execute(select(LabelStock.kind, LabelStock.stock).where(
        LabelStock.site_code == site_code)).all())
    return {kind: chosen.get(kind, render.DEFAULT_STOCK) for kind in LABEL_KINDS}


def set_stock(session: Session, site_code: str, kind: str, stock: str) -> LabelStock:
    """Choose the stock of one kind of label at a site (admin; audited)."""
    if session.scalar(select(Site.code).where(Site.code == site_code)) is None:
        raise NotFound(f"no site {site_code}")
    if kind not in LABEL_KINDS:
        raise field_error("kind", f"must be one of {', '.join(LABEL_KINDS)}")
    if stock not in render.STOCKS:
        raise field_error("stock", f"must be one of {', '.join(render.STOCKS)}")
    row = session.scalar(select(LabelStock).where(
        LabelStock.site_code == site_code, LabelStock.kind == kind).with_for_update())
    if row is None:
        row = LabelStock(site_code=site_code, kind=kind, stock=stock)
        session.add(row)
    else:
        row.stock = stock
    session.flush()
    return row


PRINTER_TIMEOUT = 5.0  # seconds to connect and to hand over the label


def printers_of(session: Session, site_code: str | None) -> list[LabelPrinter]:
    if site_code is None:
        return []
    return list(session.scalars(select(LabelPrinter).where(
        LabelPrinter.site_code == site_code, LabelPrinter.active.is_(True)
    ).order_by(LabelPrinter.name)))


def add_printer(session: Session, site_code: str, *, name: str, host: str, port: int = 9100,
                dpi: int = 203) -> LabelPrinter:
    """Configure a networked label printer of a site (admin; audited)."""
    if session.scalar(select(Site.code).where(Site.code == site_code)) is None:
        raise NotFound(f"no site {site_code}")
    name, host = (name or "").strip(), (host or "").strip()
    errors: dict[str, list[str]] = {}
    if not name or len(name) > 60:
        errors["name"] = ["1 to 60 characters"]
    if not host or len(host) > 255 or any(c.isspace() for c in host):
        errors["host"] = ["a host name or IP address"]
    if not 1 <= port <= 65535:
        errors["port"] = ["between 1 and 65535"]
    if dpi not in render.ZPL_DPIS:
        errors["dpi"] = ["203 or 300"]
    if errors:
        raise ValidationFailed("the printer is not valid", errors=errors)
    if session.scalar(select(LabelPrinter.id).where(
            LabelPrinter.site_code == site_code, LabelPrinter.name == name)) is not None:
        raise conflict("conflict", f"site {site_code} already has a printer {name}")
    printer = LabelPrinter(site_code=site_code, name=name, host=host, port=port, dpi=dpi,
                           active=True)
    session.add(printer)
    session.flush()
    return printer


def printer_timeout() -> float:
    """Seconds to connect to a printer and to hand it a job (``printer_timeout``)."""
    if has_app_context():
        return float(current_app.config["GMP_SETTINGS"].printer_timeout)
    return PRINTER_TIMEOUT


def stale_after(timeout: float | None = None) -> timedelta:
    """A pending job older than this was left by a crash: no send lasts so long."""
    timeout = printer_timeout() if timeout is None else timeout
    return timedelta(seconds=max(60.0, 6 * timeout))
