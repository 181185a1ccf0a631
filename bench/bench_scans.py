"""``POST /api/v1/scans`` under gunicorn from 16 concurrent clients (wrk), against a
reference route doing the same reads and writes as one scan (item look-up, custody
event, audit event) in raw SQL with one commit, served by the same gunicorn.

Target (issue 4): scans reach at least 50% of the reference throughput, with p99 at
most 2x the reference p99, on SQLite (WAL, synchronous=FULL) and on PostgreSQL.
Load goes only to 127.0.0.1 and every run is bounded in time (wrk -d).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench.common import BenchUnavailable, Result, postgres_available, scratch_database
from gmp_mes.audit import Actor
from gmp_mes.clock import utcnow

CLIENTS = 16
WRK = shutil.which("wrk") or "/usr/bin/wrk"
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
REPO_ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = REPO_ROOT / "config" / "gunicorn.conf.py"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _seed(url: str, instance: Path, n_items: int) -> tuple[str, list[str], list[str]]:
    """A site, an operator with a token, one patient and ``n_items`` released bags;
    returns the token, the bags' signed payloads and their ids."""
    from gmp_mes import accounts, create_app
    from identity import services as identity
    from labels import keys
    from labels import services as labels

    app = create_app({"database_url": url, "instance_path": str(instance),
                      "secret_key": "bench"})
    keys.ensure_key(app.config["GMP_SETTINGS"].signing_key)
    db = app.extensions["gmp_mes.db"]
    with app.app_context(), db.transaction(actor=Actor.system("bench")) as s:
        accounts.create_site(s, "PLANT", kind="manufacturing", name="Plant")
        accounts.create_site(s, "HOSP", kind="treatment", name="Hospital")
        user = accounts.create_user(s, "scanner", password="bench-password-123",
                                    roles=["operator"], site_code="PLANT")
        token, _ = accounts.issue_token(s, user, timedelta(hours=4))
        s.info["actor"] = Actor(user.username, user.id, user.full_name)
        patient = identity.enrol_patient(s, given_name="Bench", family_name="Patient",
                                         date_of_birth=date(1970, 1, 1), mrn="BENCH1",
                                         treatment_site="HOSP")
        ids = [identity.create_item(s, kind="final_product", coi_id=patient.coi_id,
                                    site_code="PLANT", status="released",
                                    expires_at=utcnow() + timedelta(days=30)).item_id
               for _ in range(n_items)]
        payloads = [labels.payload_for_item(s, item_id) for item_id in ids]
    db.dispose()
    return token, payloads, ids


def _lua(path: Path, route: str, bodies: list[str], token: str | None) -> None:
    headers = '["Content-Type"] = "application/json"'
    if token:
        headers += f', ["Authorization"] = "Bearer {token}"'
    quoted = ",\n".join(json.dumps(b) for b in bodies)
    path.write_text(
        f"local bodies = {{\n{quoted}\n}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i + 1\n"
        f'  return wrk.format("POST", "{route}", {{{headers}}}, bodies[(i % #bodies) + 1])\n'
        "end\n"
    )


def _parse_latency(text: str, pct: str) -> float:
    match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if match is None:
        raise RuntimeError(f"wrk printed no {pct}% latency:\n{text}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _wrk(port: int, script: Path, seconds: int) -> dict[str, Any]:
    out = subprocess.run(
        [WRK, "-t", "2", "-c", str(CLIENTS), "-d", f"{seconds}s", "--timeout", "10s",
         "--latency", "-s", str(script), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "p50": _parse_latency(out, "50"), "p99": _parse_latency(out, "99"),
            "non2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(0) if errors else ""}


def _serve(url: str, instance: Path, port: int, startup_seconds: float = 30) -> Any:
    """The app under gunicorn with the deployment settings (config/gunicorn.conf.py)."""
    env = {**os.environ, "GMP_MES_DATABASE_URL": url, "GMP_MES_INSTANCE_PATH": str(instance),
           "GMP_MES_SECRET_KEY": "bench",
           "GMP_MES_PASSWORD_COST": "test", "GMP_MES_WEB_WORKERS": str(CLIENTS)}
    # The benchmark's own app (bench/reference_app.py): gmp-mes plus the reference route.
    process = subprocess.Popen(
        [GUNICORN, "-c", str(GUNICORN_CONF), "-b", f"127.0.0.1:{port}", "--log-level",
         "warning", "--chdir", str(REPO_ROOT), "bench.reference_app:create_app()"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + startup_seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("gunicorn did not start: " + process.stderr.read().decode()[-2000:])


def _check_once(port: int, token: str, payload: str) -> None:
    """One scan by hand before the load: it must be a real, successful scan."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/scans", method="POST",
        data=json.dumps({"payload": payload, "workstation": "bench"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    body = json.loads(urllib.request.urlopen(request, timeout=10).read())
    if not body.get("ok"):
        raise RuntimeError(f"the benchmark scan is refused: {body}")


def _one_backend(backend: str, seconds: int, n_items: int) -> list[Result]:
    results: list[Result] = []
    with scratch_database(backend) as db, tempfile.TemporaryDirectory() as folder:
        url = db.url
        db.dispose()
        instance = Path(folder)
        token, payloads, ids = _seed(url, instance, n_items)
        port = _free_port()
        # Same server, same settings for both routes.
        server = _serve(url, instance, port)
        try:
            _check_once(port, token, payloads[0])
            scan_lua, ref_lua = instance / "scan.lua", instance / "ref.lua"
            _lua(scan_lua, "/api/v1/scans",
                 [json.dumps({"payload": p, "workstation": "bench"}) for p in payloads], token)
            _lua(ref_lua, "/api/v1/bench/reference-scan",
                 [json.dumps({"item_id": i}) for i in ids], None)
            _wrk(port, ref_lua, 1)  # warm-up: connections, caches, WAL
            _wrk(port, scan_lua, 1)
            reference = _wrk(port, ref_lua, seconds)
            scans = _wrk(port, scan_lua, seconds)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    label = "SQLite WAL synchronous=FULL" if backend == "sqlite" else "PostgreSQL"
    notes = (f"{label}; {CLIENTS} clients, gunicorn {CLIENTS} sync workers, {seconds}s; scans p50 "
             f"{scans['p50']:.1f} ms p99 {scans['p99']:.1f} ms; reference p50 "
             f"{reference['p50']:.1f} ms p99 {reference['p99']:.1f} ms; non-2xx "
             f"scans {scans['non2xx']} reference {reference['non2xx']} "
             f"{scans['socket_errors']}")
    clean = (scans["non2xx"] == 0 and reference["non2xx"] == 0 and scans["rps"] > 0
             and reference["rps"] > 0)
    results.append(Result(
        name=f"scans throughput ({backend})", figure=scans["rps"], unit="rps",
        baseline=reference["rps"], baseline_name="raw SQL reference route",
        target=">= 50% of reference", met=clean and scans["rps"] >= 0.5 * reference["rps"],
        notes=notes,
    ))
    results.append(Result(
        name=f"scans p99 latency ({backend})", figure=scans["p99"], unit="ms",
        baseline=reference["p99"], baseline_name="raw SQL reference route",
        target="<= 2x reference p99", met=clean and scans["p99"] <= 2 * reference["p99"],
        notes=f"p50 {scans['p50']:.1f} ms vs reference {reference['p50']:.1f} ms",
    ))
    return results


def run(args: Any) -> list[Result]:
    if not Path(WRK).exists():
        raise BenchUnavailable("wrk is not installed (make bench installs Debian's wrk as "
                               "root; otherwise apt-get install wrk)")
    seconds = 3 if args.quick else 10
    n_items = 20 if args.quick else 200
    results = _one_backend("sqlite", seconds, n_items)
    if postgres_available():
        results.extend(_one_backend("postgresql", seconds, n_items))
    else:
        print("bench_scans: PostgreSQL not reachable, skipped", file=sys.stderr)
    return results
