"""Benchmark reference route (bench/bench_scans.py): the same reads and writes as one
scan - item look-up, custody event, audit event - in raw SQL with one commit.

It lives here, in the benchmark, and nowhere in the shipped packages: only the
benchmark's own application (``bench.reference_app``) registers it. It deliberately
skips every rule and writes without the application's audit path: it is the floor a
scan is measured against, not a way to scan.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import Blueprint, jsonify, request
from sqlalchemy import text

from gmp_mes.audit import AUDIT_LOCK_KEY, GENESIS_HASH, format_time
from gmp_mes.clock import utcnow
from gmp_mes.http import database

bp = Blueprint("bench_reference", __name__)


@bp.route("/api/v1/bench/reference-scan", methods=["POST"])
def reference_scan() -> Any:
    body = request.get_json(silent=True) or {}
    item_id = str(body.get("item_id", ""))
    now = utcnow()
    with database().write_engine.begin() as c:
        postgres = c.dialect.name == "postgresql"
        row = c.execute(text("SELECT item_id, coi_id, status, expires_at FROM item "
                             "WHERE item_id = :i"), {"i": item_id}).first()
        if row is None:
            return jsonify({"ok": False}), 404
        stamp = now if postgres else now.replace(tzinfo=None)
        event_id = c.execute(text(
            "INSERT INTO custody_event (item_id, action, site_code, username, workstation, "
            "occurred_at, ok, flagged) VALUES (:i, 'scan', 'BENCH', 'bench', 'ref', :t, "
            "true, false) RETURNING id"), {"i": item_id, "t": stamp}).scalar_one()
        if postgres:
            c.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK_KEY})
        head = c.execute(
            text("SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1")
        ).first()
        seq, prev = (head[0], head[1]) if head else (0, GENESIS_HASH)
        record = json.dumps(
            {"seq": seq + 1, "at": format_time(now), "user_id": None, "username": "bench",
             "action": "create", "entity_type": "custody_event", "entity_id": str(event_id),
             "reason": None, "old": None,
             "new": {"item_id": item_id, "action": "scan", "site_code": "BENCH",
                     "workstation": "ref", "ok": True, "flagged": False}},
            sort_keys=True, separators=(",", ":"))
        c.execute(text("INSERT INTO audit_event (seq, record, prev_hash, hash) "
                       "VALUES (:s, :r, :p, :h)"),
                  {"s": seq + 1, "r": record, "p": prev,
                   "h": hashlib.sha256((prev + record).encode()).hexdigest()})
    return jsonify({"ok": True, "item_id": row[0], "coi_id": row[1], "status": row[2]})
