"""Fault tests (issue 14): PostgreSQL behind a local TCP proxy that becomes a black hole.

Requests answer 503 problem+json within the configured bound instead of hanging,
``/healthz`` answers within 5 s, and a scheduler leader partitioned from the database
stops sweeping while another node takes over within two intervals. The bounds asserted
are the configured ones with slack for a loaded machine: they tell a bound from a hang
(before these timeouts, requests hung until gunicorn killed the worker at 60 s).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import make_url

from gmp_mes import create_app, registry
from gmp_mes.scheduler import SchedulerHost
from tests.tcp_proxy import BlackHoleProxy

NETWORK, CONNECT, HEALTH, INTERVAL = 2, 2, 2, 2


def in_thread(call: Any, limit: float) -> tuple[Any, float]:
    """Run ``call`` in a thread; its result and how long it took (fail if it hangs)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:  # handed to the test thread below
            box["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still waiting after {limit} s: the call hangs"
    if "error" in box:
        raise box["error"]
    return box["result"], time.monotonic() - started


@pytest.fixture
def proxy(database_url: str) -> Iterator[BlackHoleProxy]:
    if not database_url.startswith("postgresql"):
        pytest.skip("network faults are PostgreSQL's (SQLite is a local file)")
    url = make_url(database_url)
    with BlackHoleProxy(url.host or "127.0.0.1", url.port or 5432) as p:
        yield p


@pytest.fixture
def proxied_app(proxy: BlackHoleProxy, app_config: dict[str, Any], app: Flask) -> Iterator[Flask]:
    """A second application on the same database, reached through the proxy."""
    url = make_url(app_config["database_url"]).set(host="127.0.0.1", port=proxy.port)
    application = create_app({
        **app_config,
        "database_url": url.render_as_string(hide_password=False),
        "db_network_timeout": NETWORK,
        "db_connect_timeout": CONNECT,
        "health_timeout": HEALTH,
        "sweep_seconds": INTERVAL,
    })
    application.config["TESTING"] = True
    yield application
    application.extensions["gmp_mes.db"].dispose()


def test_sessions_carry_statement_and_lock_timeouts(proxied_app) -> None:
    with proxied_app.extensions["gmp_mes.db"].engine.connect() as c:
        assert c.execute(text("SHOW statement_timeout")).scalar() == "30s"
        assert c.execute(text("SHOW lock_timeout")).scalar() == "10s"
        params = c.connection.dbapi_connection.info.get_parameters()
        assert params["keepalives"] == "1" and params["keepalives_idle"] == "15"
        assert params["connect_timeout"] == str(CONNECT)


def test_a_black_holed_database_gives_503_within_the_bound(proxied_app, make_user, proxy):
    person = make_user("opfault", "operator")
    client = proxied_app.test_client()
    token = client.post("/api/v1/auth/tokens", json={
        "username": person.username, "password": person.password}).get_json()["token"]
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    assert client.get("/healthz").status_code == 200

    proxy.black_hole()
    # A pooled connection's ping is cut after NETWORK s, a new one gives up after CONNECT s.
    response, took = in_thread(lambda: client.get("/api/v1/me", headers=headers), 60)
    assert response.status_code == 503
    assert response.content_type == "application/problem+json"
    assert response.get_json()["code"] == "database_unavailable"
    assert response.headers["Retry-After"]
    assert took < NETWORK + CONNECT + 3

    health, took = in_thread(lambda: client.get("/healthz"), 60)
    assert health.status_code == 503
    assert health.get_json()["status"] == "unhealthy"
    assert took < 5.0  # issue 14: /healthz within 5 s in a black hole


def counting_job(calls: list[str]):
    def job(app_: Flask) -> list[str]:
        calls.append("sweep")
        return ["swept"]

    return job


def test_a_partitioned_leader_stops_and_the_standby_takes_over(proxied_app, app, db, proxy):
    leader_calls: list[str] = []
    standby_calls: list[str] = []
    registry.of(proxied_app).jobs = [counting_job(leader_calls)]
    registry.of(app).jobs = [counting_job(standby_calls)]
    leader, standby = SchedulerHost(proxied_app), SchedulerHost(app)
    standby.leadership.ttl = float(INTERVAL)
    lease = text("SELECT holder, renewed_at FROM scheduler_lease WHERE name = 'scheduler'")
    try:
        assert leader.tick() == ["swept"]
        assert standby.tick() == []
        with db.engine.connect() as c:
            holder, last_renewal = c.execute(lease).one()
        assert holder == leader.leadership.holder

        proxy.black_hole()
        # Both nodes go on ticking once per interval, as in production. The leader cannot
        # renew: its ticks sweep nothing (each is cut after NETWORK s).
        leader_ticks: list[list[str]] = []

        def leader_goes_on() -> None:
            for _ in range(3):
                leader_ticks.append(leader.tick())
                time.sleep(INTERVAL)

        leader_thread = threading.Thread(target=leader_goes_on, daemon=True)
        leader_thread.start()
        took_over = False
        for _ in range(6):
            if standby.tick() == ["swept"]:
                took_over = True
                break
            time.sleep(INTERVAL)
        assert took_over, "the standby never took over"
        assert not leader.leadership.held
        leader_thread.join(60)
        assert not leader_thread.is_alive()
        assert leader_ticks == [[], [], []]
        with db.engine.connect() as c:
            holder, takeover = c.execute(lease).one()
        assert holder == standby.leadership.holder
        # By the database's clock: within two intervals of the leader's last renewal.
        assert takeover - last_renewal <= 2 * INTERVAL + 1.0
        assert standby_calls == ["sweep"]
        assert leader_calls == ["sweep"]  # never two leaders sweeping
    finally:
        standby.stop()
        leader.leadership._valid_until = 0.0  # partitioned: nothing to hand over
        leader.stop()


def test_the_watchdog_cuts_a_round_trip_past_its_deadline_and_only_that_one() -> None:
    import socket

    from gmp_mes.deadline import Watchdog, budget

    dog = Watchdog(network_timeout=30)
    stuck, peer = socket.socketpair()
    quick, quick_peer = socket.socketpair()
    try:
        with dog.watch(quick.fileno()):  # answered in time: left alone
            quick_peer.sendall(b"ok")
            assert quick.recv(2) == b"ok"
        with budget(0.2), dog.watch(stuck.fileno()):
            assert stuck.recv(1) == b""  # no answer ever comes: shut down, reads end
        assert dog.fired == 1
        quick_peer.sendall(b"still")
        assert quick.recv(5) == b"still"
    finally:
        for s in (stuck, peer, quick, quick_peer):
            s.close()
