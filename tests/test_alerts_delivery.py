"""Alert delivery against real local receivers: an SMTP server (aiosmtpd) and an HTTP
webhook receiver (http.server) that fails the first attempt (issue 8)."""

from __future__ import annotations

import email
import hashlib
import hmac
import json
import socket
import threading
import time
from datetime import timedelta
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, text

from gmp_mes import alerts, notify, registry
from gmp_mes.alerts import AlertDelivery, AlertSpec
from gmp_mes.audit import Actor
from gmp_mes.clock import clock, utcnow
from gmp_mes.scheduler import SchedulerHost
from tests.conftest import PASSWORD

SYSTEM = Actor.system("test")
SECRET = "test-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []
        self.received = threading.Event()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((list(envelope.rcpt_tos), message))
        self.received.set()
        return "250 OK"


@pytest.fixture
def smtp():
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    box.url = f"smtp://127.0.0.1:{port}?from=alerts@gmp.example.org"
    yield box
    controller.stop()


class Receiver:
    """Webhook receiver: answers the first ``fail_first`` requests with 500."""

    def __init__(self, fail_first: int = 1) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[Any, bytes, int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.got = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.gate.wait(30)
                status = 500 if len(receiver.requests) < receiver.fail_first else 204
                receiver.requests.append((self.headers, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.got.set()

            def log_message(self, *args) -> None:  # keep test output quiet
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/gmp"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver(fail_first=1)
    yield r
    r.close()


@pytest.fixture
def app_config(app_config, smtp, receiver):
    app_config.update(smtp_url=smtp.url, webhook_url=receiver.url)
    return app_config


@pytest.fixture
def fast_retries(app):
    app.config["GMP_NOTIFY_BACKOFF_SECONDS"] = 0.2
    return app


def raise_one(db, cause="expired:ITM-1", site="CLEAN1", roles=("operator", "qa")) -> int:
    with db.transaction(actor=SYSTEM) as s:
        alert = alerts.raise_alert(s, AlertSpec(
            cause=cause, kind="expired", severity="major", subject_type="item",
            subject_id=cause.split(":")[1], message=f"{cause.split(':')[1]} has expired",
            roles=roles, site_code=site, due_at=utcnow(),
        ))
        assert alert is not None
        return alert.id


def deliveries(db, channel=None) -> list[dict]:
    statement = select(AlertDelivery).order_by(AlertDelivery.id)
    if channel:
        statement = statement.where(AlertDelivery.channel == channel)
    with db.session(write=False) as s:
        return [
            {c.key: getattr(row, c.key) for c in AlertDelivery.__table__.columns}
            for row in s.scalars(statement)
        ]


def with_email(db, username, address) -> None:
    with db.engine.begin() as c:
        c.execute(text("UPDATE app_user SET email = :e WHERE username = :u"),
                  {"e": address, "u": username})


@pytest.fixture
def people(make_user, db):
    make_user("opa", "operator")
    make_user("qaa", "qa")
    make_user("cla", "clinician", site="WARD9")
    make_user("opb", "operator")  # no e-mail address
    with_email(db, "opa", "opa@gmp.example.org")
    with_email(db, "qaa", "qaa@gmp.example.org")
    with_email(db, "cla", "cla@gmp.example.org")


def test_email_reaches_the_alert_roles_at_its_site(app, db, smtp, people, fast_retries) -> None:
    alert_id = raise_one(db)
    report = notify.deliver_pending(app)
    assert report.sent >= 1
    assert len(smtp.messages) == 1
    rcpt, message = smtp.messages[0]
    assert sorted(rcpt) == ["opa@gmp.example.org", "qaa@gmp.example.org"]
    assert message["From"] == "alerts@gmp.example.org"
    assert message["Subject"] == "[gmp-mes] MAJOR expired: item ITM-1"
    assert message["X-GMP-Alert-Id"] == str(alert_id)
    assert "ITM-1 has expired" in message.get_content()
    (row,) = deliveries(db, "email")
    assert row["outcome"] == "sent" and row["attempt"] == 1 and row["final"]
    assert "opa@gmp.example.org" in row["target"]
    # Delivered exactly once: another pass sends nothing more.
    notify.deliver_pending(app)
    assert len(smtp.messages) == 1 and len(deliveries(db, "email")) == 1


def test_email_without_recipients_is_recorded_as_skipped(app, db, smtp, people) -> None:
    raise_one(db, site="NOWHERE", roles=("admin",))
    notify.deliver_pending(app)
    assert smtp.messages == []
    (row,) = deliveries(db, "email")
    assert row["outcome"] == "skipped" and row["final"]


def test_webhook_is_signed_and_retried_after_a_failure(app, db, receiver) -> None:
    app.config["GMP_NOTIFY_BACKOFF_SECONDS"] = 1.0
    alert_id = raise_one(db)
    first = notify.deliver_pending(app)
    assert first.failed == 1 and first.next_due is not None
    assert len(receiver.requests) == 1
    (row,) = deliveries(db, "webhook")
    assert row["outcome"] == "failed" and row["detail"] == "HTTP 500" and not row["final"]
    assert row["next_attempt_at"] is not None
    notify.deliver_pending(app)  # the retry is not due yet: backoff
    assert len(receiver.requests) == 1
    time.sleep(1.05)
    second = notify.deliver_pending(app)
    assert second.sent == 1 and second.next_due is None
    assert [status for _, _, status in receiver.requests] == [500, 204]
    headers, body, _ = receiver.requests[1]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-GMP-Signature"] == expected
    assert notify.verify_signature(SECRET, body, headers["X-GMP-Signature"])
    assert not notify.verify_signature(SECRET, body + b" ", headers["X-GMP-Signature"])
    assert headers["X-GMP-Delivery-Attempt"] == "2"
    document = json.loads(body)
    assert document["id"] == alert_id and document["kind"] == "expired"
    assert document["roles"] == ["operator", "qa"] and document["site_code"] == "CLEAN1"
    rows = deliveries(db, "webhook")
    assert [(r["attempt"], r["outcome"], r["final"]) for r in rows] == [
        (1, "failed", False), (2, "sent", True)
    ]
    assert rows[1]["target"] == receiver.url
    # The first retry waits the base backoff (it doubles with every further failure).
    gap = rows[0]["next_attempt_at"] - rows[0]["attempted_at"]
    assert gap == timedelta(seconds=1)


def test_delivery_attempts_are_append_only(app, db, receiver) -> None:
    raise_one(db)
    notify.deliver_pending(app)
    with pytest.raises(Exception, match="refused"), db.engine.begin() as c:
        c.execute(text("UPDATE alert_delivery SET outcome = 'sent'"))
    with pytest.raises(Exception, match="refused"), db.engine.begin() as c:
        c.execute(text("DELETE FROM alert_delivery"))


def test_gives_up_after_the_last_attempt(app, db, receiver, fast_retries, monkeypatch) -> None:
    receiver.fail_first = 100
    monkeypatch.setattr(notify, "MAX_ATTEMPTS", 3)
    app.config["GMP_NOTIFY_BACKOFF_SECONDS"] = 0.01
    raise_one(db)
    for _ in range(30):
        notify.deliver_pending(app)
        if len(deliveries(db, "webhook")) == 3:
            break
        time.sleep(0.03)
    rows = deliveries(db, "webhook")
    assert [(r["attempt"], r["final"]) for r in rows] == [(1, False), (2, False), (3, True)]
    assert rows[2]["next_attempt_at"] is None
    assert [(r["next_attempt_at"] - r["attempted_at"]).total_seconds() for r in rows[:2]] == [
        pytest.approx(0.01), pytest.approx(0.02)
    ]
    notify.deliver_pending(app)
    assert len(deliveries(db, "webhook")) == 3


def test_unreachable_servers_are_recorded_not_raised(app, db) -> None:
    settings = app.config["GMP_SETTINGS"]
    port = free_port()  # nothing listens there
    app.config["GMP_SETTINGS"] = type(settings)(**{
        **settings.__dict__, "smtp_url": f"smtp://127.0.0.1:{port}?from=a@b.example.org",
        "webhook_url": f"http://127.0.0.1:{port}/x",
    })
    raise_one(db)
    report = notify.deliver_pending(app)
    assert report.failed == 1  # webhook: connection refused (e-mail: no recipients, skipped)
    webhook = deliveries(db, "webhook")[0]
    assert webhook["outcome"] == "failed" and "Connection refused" in webhook["detail"]


def test_only_one_deliverer_at_a_time(app, db, receiver) -> None:
    raise_one(db)
    with notify.delivery_lock(app) as mine:
        assert mine
        assert notify.deliver_pending(app).attempted == 0
    assert notify.deliver_pending(app).attempted >= 1


def test_old_alerts_are_not_sent_retroactively(app, db, receiver) -> None:
    clock.freeze(utcnow() - timedelta(days=2))
    raise_one(db)
    clock.unfreeze()
    assert notify.deliver_pending(app).attempted == 0
    assert receiver.requests == []


@pytest.mark.parametrize("url", ["http://x", "smtp://", "smtp://h:notaport?from=a",
                                 "smtps://u:p%40w@mail.example.org?from=x@y.example.org"])
def test_smtp_url_parsing(url) -> None:
    if url.startswith("smtps://u"):
        target = notify.parse_smtp_url(url)
        assert (target.host, target.port, target.use_ssl) == ("mail.example.org", 465, True)
        assert (target.username, target.password, target.sender) == ("u", "p@w", "x@y.example.org")
        return
    with pytest.raises(ValueError):
        notify.parse_smtp_url(url)


def test_scheduler_delivers_in_the_background_without_blocking_the_sweep(
    app, db, receiver, smtp, people, fast_retries
) -> None:
    """The sweep commits and returns while the webhook receiver still holds the request;
    the deliverer then retries the failed first attempt by itself."""

    def job(app_):
        raise_one(app_.extensions["gmp_mes.db"], cause="expired:ITM-BG")
        return ["alert raised for ITM-BG"]

    registry.of(app).jobs = [job]
    receiver.gate.clear()  # the receiver hangs until we let it go
    host = SchedulerHost(app)
    host.notifier.start()
    try:
        assert host.tick() == ["alert raised for ITM-BG"]
        with db.engine.connect() as c:
            assert c.execute(text("SELECT count(*) FROM alert")).scalar() == 1
        assert receiver.requests == []  # still hanging: the tick did not wait for it
        receiver.gate.set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(receiver.requests) < 2:
            time.sleep(0.05)
        assert [status for _, _, status in receiver.requests] == [500, 204]
        assert smtp.received.wait(10)
    finally:
        host.stop()
    assert [r["outcome"] for r in deliveries(db, "webhook")] == ["failed", "sent"]


def test_users_create_takes_an_email(runner, make_site, db) -> None:
    make_site("CLEAN1")
    result = runner.invoke(args=["users", "create", "erin", "--role", "qa", "--site", "CLEAN1",
                                 "--email", "erin@gmp.example.org", "--password-stdin"],
                           input=f"{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    with db.engine.connect() as c:
        assert c.execute(text("SELECT email FROM app_user WHERE username = 'erin'")).scalar() == (
            "erin@gmp.example.org")
    bad = runner.invoke(args=["users", "create", "fred", "--role", "qa", "--site", "CLEAN1",
                              "--email", "not-an-address", "--password-stdin"],
                        input=f"{PASSWORD}\n")
    assert bad.exit_code != 0 and "email" in bad.output


def test_admin_api_sets_a_users_email(make_user, login) -> None:
    admin = login(make_user("root9", "admin"))
    body = {"username": "gina", "full_name": "Gina Q", "password": PASSWORD, "roles": ["qc"],
            "site": "CLEAN1", "email": "gina@gmp.example.org"}
    response = admin.post("/api/v1/users", json=body)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["email"] == "gina@gmp.example.org"
    bad = admin.post("/api/v1/users", json={**body, "username": "hal", "email": "nope"})
    assert bad.status_code == 422 and "email" in bad.get_json()["errors"]
    plain = admin.post("/api/v1/users", json={k: v for k, v in body.items() if k != "email"}
                       | {"username": "ida"})
    assert plain.status_code == 201 and plain.get_json()["email"] is None
