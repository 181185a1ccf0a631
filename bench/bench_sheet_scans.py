"""``POST /api/v1/scans`` from 16 concurrent clients (wrk) while 100-label reprint sheets
of the same bags are printed one after the other, against the same scans with nothing
else running, in the same run on the same gunicorn (issue 13).

A sheet records its prints and commits before rendering the PDF, so the rendering holds
neither the SQLite writer lock nor PostgreSQL row locks. Before, a 2 s render inside the
write transaction moved every scan station's p50 from 8 ms to 1.9 s.

Target: scan throughput while sheets render at least 80% of the baseline (what is left
is the CPU the rendering itself takes on a small machine), and no scan refused or failed.
Baseline and loaded runs alternate and the medians are compared, so drift of a shared
machine hits both alike. Load goes only to 127.0.0.1, every run is bounded (wrk -d).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from bench.bench_scans import CLIENTS, WRK, _check_once, _free_port, _lua, _seed, _serve, _wrk
from bench.common import BenchUnavailable, Result, postgres_available, scratch_database
from gmp_mes.audit import Actor

SHEET_ITEMS = 100


def _print_originals(url: str, instance: Path, ids: list[str]) -> None:
    """The first print of every label, so the sheets under load are reprints."""
    from sqlalchemy import select

    from gmp_mes import create_app
    from gmp_mes.models import User
    from labels import services as labels

    app = create_app({"database_url": url, "instance_path": str(instance),
                      "secret_key": "bench"})
    db = app.extensions["gmp_mes.db"]
    with app.app_context(), db.transaction(actor=Actor.system("bench")) as s:
        user_id = s.execute(select(User.id).where(User.username == "scanner")).scalar_one()
        labels.print_sheet(s, ids, labels.PrintRequest(format="pdf"), user_id=user_id)
    db.dispose()


class SheetPrinter(threading.Thread):
    """Prints reprint sheets back to back until stopped; keeps each one's duration."""

    def __init__(self, port: int, token: str, ids: list[str]) -> None:
        super().__init__(daemon=True)
        query = urllib.parse.urlencode({"items": ",".join(ids), "reprint": "true",
                                        "reason": "benchmark reprint"})
        self.url = f"http://127.0.0.1:{port}/api/v1/labels/sheet?{query}"
        self.token = token
        self.stop = threading.Event()
        self.durations: list[float] = []
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            request = urllib.request.Request(
                self.url, headers={"Authorization": f"Bearer {self.token}"})
            started = time.perf_counter()
            try:
                body = urllib.request.urlopen(request, timeout=60).read()
            except OSError as error:
                self.failures.append(str(error))
                continue
            if not body.startswith(b"%PDF"):
                self.failures.append("not a PDF")
            self.durations.append((time.perf_counter() - started) * 1000)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _one_backend(backend: str, seconds: int, rounds: int) -> list[Result]:
    with scratch_database(backend) as db, tempfile.TemporaryDirectory() as folder:
        url = db.url
        db.dispose()
        instance = Path(folder)
        token, payloads, ids = _seed(url, instance, SHEET_ITEMS)
        _print_originals(url, instance, ids)
        port = _free_port()
        server = _serve(url, instance, port, startup_seconds=180)  # a busy machine
        try:
            _check_once(port, token, payloads[0])
            scan_lua = instance / "scan.lua"
            _lua(scan_lua, "/api/v1/scans",
                 [json.dumps({"payload": p, "workstation": "bench"}) for p in payloads], token)
            for _ in range(3):  # warm-up: every worker started, connections, caches, WAL
                _wrk(port, scan_lua, 2)
            baselines, loads, printers = [], [], []
            for _ in range(rounds):
                baselines.append(_wrk(port, scan_lua, seconds))
                printer = SheetPrinter(port, token, ids)
                printer.start()
                while not printer.durations and not printer.failures:
                    time.sleep(0.05)  # the first sheet is through: printing is going on
                loads.append(_wrk(port, scan_lua, seconds))
                printer.stop.set()
                printer.join(timeout=300)  # the sheet in progress ends before the baseline
                printers.append(printer)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    sheets = [d for p in printers for d in p.durations]
    failures = [f for p in printers for f in p.failures]
    base = {k: _median([b[k] for b in baselines]) for k in ("rps", "p50", "p99")}
    load = {k: _median([b[k] for b in loads]) for k in ("rps", "p50", "p99")}
    non2xx = sum(r["non2xx"] for r in baselines + loads)
    label = "SQLite WAL synchronous=FULL" if backend == "sqlite" else "PostgreSQL"
    mean_sheet = sum(sheets) / len(sheets) if sheets else float("nan")
    notes = (f"{label}; {CLIENTS} clients; medians of {rounds} alternating {seconds}s runs; "
             f"{len(sheets)} sheets of {SHEET_ITEMS} labels printed back to back, "
             f"{mean_sheet:.0f} ms each; scans p50 {load['p50']:.1f} ms p99 {load['p99']:.1f} ms "
             f"while printing, alone p50 {base['p50']:.1f} ms p99 {base['p99']:.1f} ms; "
             f"rps per run alone {[round(b['rps']) for b in baselines]} while printing "
             f"{[round(b['rps']) for b in loads]}; non-2xx scans {non2xx}, sheet failures "
             f"{len(failures)}")
    clean = non2xx == 0 and not failures and len(sheets) >= rounds and base["rps"] > 0
    return [Result(
        name=f"scans while sheets render ({backend})", figure=load["rps"], unit="rps",
        baseline=base["rps"], baseline_name="scans alone, same run",
        target=">= 80% of scans alone", met=clean and load["rps"] >= 0.8 * base["rps"],
        notes=notes,
    )]


def run(args: Any) -> list[Result]:
    if not Path(WRK).exists():
        raise BenchUnavailable("wrk is not installed (make bench installs Debian's wrk as "
                               "root; otherwise apt-get install wrk)")
    seconds, rounds = (3, 1) if args.quick else (10, 3)
    results = _one_backend("sqlite", seconds, rounds)
    if postgres_available():
        results.extend(_one_backend("postgresql", seconds, rounds))
    else:
        print("bench_sheet_scans: PostgreSQL not reachable, skipped", file=sys.stderr)
    return results
