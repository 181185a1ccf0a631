"""Test fixtures: every database test runs on SQLite and, when
GMP_MES_TEST_POSTGRES_URL is set, on PostgreSQL too.

Each test gets its own freshly migrated database, cloned from a template
migrated once per run (a file copy on SQLite, CREATE DATABASE ... TEMPLATE on
PostgreSQL), so tests commit for real and never see each other's leftovers.
"""

from __future__ import annotations

import os

os.environ.setdefault("GMP_MES_PASSWORD_COST", "test")  # before gmp_mes imports passwords

import gc
import itertools
import shutil
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text
from sqlalchemy.engine import make_url
from werkzeug.routing.rules import Rule

from gmp_mes import create_app, migrate, registry
from gmp_mes.audit import Actor
from gmp_mes.clock import clock
from gmp_mes.db import Database, throwaway_engine
from tests import recording

POSTGRES_URL = os.environ.get("GMP_MES_TEST_POSTGRES_URL")
PASSWORD = "correct-horse-battery"
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])
_counter = itertools.count()
# Requirement markers into the JUnit XML, for the traceability matrix (make validation).
pytest_plugins = ["validation.pytest_plugin"]


# CI explores the same examples on every run, so a red build is reproducible.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CI") and not POSTGRES_URL:
        raise pytest.UsageError("CI must set GMP_MES_TEST_POSTGRES_URL: PostgreSQL is required")


def pytest_collection_finish(session: pytest.Session) -> None:
    """What is alive once the tests are collected (every module, the collected items)
    lives to the end of the run: frozen out of the garbage collector's reach, a full
    collection walks only what the running test made. Without this the collector walked
    ~150,000 long-lived objects many times per test, a third of the suite's CPU time
    (each ``create_app`` alone allocates enough to trigger several full collections)."""
    gc.collect()
    gc.freeze()
    # Fewer young collections: each test allocates a lot and frees most of it at once.
    gc.set_threshold(10_000, 20, 10)


# A URL rule's builder (the function ``url_for`` calls) is Python source that werkzeug
# generates and compiles for every rule of every application: 40 % of ``create_app``,
# which runs once per test. The function depends only on the rule's parts, defaults and
# converters, never on the application, so the suite compiles each once per process and
# binds it to each new rule as werkzeug does (``Rule.compile``).
_builders: dict[tuple[object, ...], Any] = {}
_compile_builder = Rule._compile_builder


def _cached_builder(self: Rule, append_unknown: bool = True) -> Any:
    key = (self.rule, self.subdomain, self.host, tuple(self._trace),
           tuple((name, type(c)) for name, c in self._converters.items()),
           repr(sorted((self.defaults or {}).items())), append_unknown)
    builder = _builders.get(key)
    if builder is None:
        builder = _builders[key] = _compile_builder(self, append_unknown)
    return builder


Rule._compile_builder = _cached_builder  # type: ignore[method-assign]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests (marked ``slow``, and the browser tests) first: with ``make test``'s
    two workers (``--dist worksteal``) the short ones then fill in at the end and both
    workers finish together, instead of one running schemathesis alone for a minute.
    The order is otherwise kept; no test may depend on another's leftovers anyway."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("slow")
               or item.get_closest_marker("browser") else 1)


PG_SPARES = 3  # PostgreSQL clones kept ready per worker (Templates)


class Templates:
    """Migrated template databases, made once per test run and cloned per test.

    On PostgreSQL a clone (``CREATE DATABASE ... TEMPLATE``) takes 0.2-0.3 s and a
    ``DROP DATABASE`` 0.02-0.5 s, longer than most tests. Both run off the tests' path:
    ``PG_SPARES`` clones are kept ready, made by two threads (clones of one template run
    side by side), and a finished test's database is dropped behind it on two threads
    of their own, so a test waits for neither and no backlog of drops is left for the
    end of the run. Every test still gets a database no other test has touched."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self.sqlite_template: Path | None = None
        self.pg_template: str | None = None
        self._pg_cloner = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pg-clone")
        self._pg_dropper = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pg-drop")
        self._pg_spares: deque[Future[str]] = deque()
        self._pg_drops: list[Future[None]] = []

    def sqlite(self) -> str:
        if self.sqlite_template is None:
            path = self.root / "template.sqlite"
            db = Database(f"sqlite:///{path}")
            migrate.upgrade(db.engine)
            db.dispose()
            self.sqlite_template = path
        target = self.root / f"t{next(_counter)}.sqlite"
        shutil.copyfile(self.sqlite_template, target)
        return f"sqlite:///{target}"

    def _pg_admin_engine(self) -> Any:
        assert POSTGRES_URL
        return throwaway_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")

    def _pg_clone(self) -> str:
        assert POSTGRES_URL and self.pg_template
        name = f"gmp_t_{self.worker}_{uuid.uuid4().hex[:10]}"
        admin = self._pg_admin_engine()
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.pg_template}"'))
        admin.dispose()
        return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    def _pg_drop(self, name: str) -> None:
        admin = self._pg_admin_engine()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    def postgresql(self) -> str:
        assert POSTGRES_URL
        if self.pg_template is None:
            name = f"gmp_tmpl_{self.worker}_{os.getpid()}"
            admin = self._pg_admin_engine()
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                c.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            url = make_url(POSTGRES_URL).set(database=name)
            engine = throwaway_engine(url.render_as_string(hide_password=False))
            migrate.upgrade(engine)
            engine.dispose()
            self.pg_template = name
        while len(self._pg_spares) <= PG_SPARES:
            self._pg_spares.append(self._pg_cloner.submit(self._pg_clone))
        return self._pg_spares.popleft().result()

    def drop(self, url: str) -> None:
        if url.startswith("postgresql"):
            name = make_url(url).database
            assert name
            self._pg_drops.append(self._pg_dropper.submit(self._pg_drop, name))
            self._raise_failed_drops()

    def _raise_failed_drops(self) -> None:
        """A drop that failed fails the run (not silently left behind)."""
        done = [f for f in self._pg_drops if f.done()]
        self._pg_drops = [f for f in self._pg_drops if not f.done()]
        for future in done:
            future.result()

    def cleanup(self) -> None:
        while self._pg_spares:
            self.drop(self._pg_spares.popleft().result())
        self._pg_cloner.shutdown(wait=True)
        self._pg_dropper.shutdown(wait=True)
        self._raise_failed_drops()
        if self.pg_template:
            self._pg_drop(self.pg_template)


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Templates]:
    t = Templates(tmp_path_factory.mktemp("db"))
    yield t
    t.cleanup()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, templates: Templates) -> Iterator[str]:
    url = templates.sqlite() if request.param == "sqlite" else templates.postgresql()
    yield url
    templates.drop(url)


@pytest.fixture(autouse=True)
def _reset_clock() -> Iterator[None]:
    yield
    clock.unfreeze()


@pytest.fixture
def app_config(database_url: str, tmp_path: Path) -> dict[str, Any]:
    """Settings for the test app; tests may add keys before ``app`` is built."""
    return {
        "database_url": database_url,
        "instance_path": str(tmp_path / "instance"),
        "secret_key": "test-secret",
        "facility_id": "A9999",
        "timezone": "Europe/Paris",
    }


@pytest.fixture(scope="session")
def installed_domains() -> list[registry.Domain]:
    """The installed domains, read from the entry points once per run (12 ms a read);
    ``create_app`` reads the same list when given none."""
    return registry.installed_domains()


@pytest.fixture
def app(app_config: dict[str, Any], installed_domains: list[registry.Domain]) -> Iterator[Flask]:
    application = create_app(app_config, domains=installed_domains)
    application.config["TESTING"] = True
    # What `gmp-mes init` does for labels: each test app gets its own signing key.
    from labels.keys import ensure_key

    ensure_key(application.config["GMP_SETTINGS"].signing_key)
    yield application
    application.extensions["gmp_mes.db"].dispose()


@pytest.fixture
def db(app: Flask) -> Database:
    return app.extensions["gmp_mes.db"]


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> Any:
    return app.test_cli_runner()


@dataclass
class Person:
    username: str
    password: str
    roles: tuple[str, ...]
    site: str
    user_id: int

    @property
    def actor(self) -> Actor:
        return Actor(self.username, self.user_id, self.username.title())


@pytest.fixture
def make_site(db: Database) -> Callable[..., str]:
    from gmp_mes import accounts

    def make(code: str = "CLEAN1", kind: str = "manufacturing", name: str | None = None) -> str:
        with db.transaction(actor=Actor.system("test")) as s:
            existing = s.execute(
                text("SELECT code FROM site WHERE code = :c"), {"c": code}
            ).scalar()
            if existing is None:
                accounts.create_site(
                    s, code, kind=kind, name=name or f"Site {code}", timezone="Europe/Paris"
                )
        return code

    return make


@pytest.fixture
def make_user(db: Database, make_site: Callable[..., str]) -> Callable[..., Person]:
    from gmp_mes import accounts

    def make(
        username: str | None = None, *roles: str, site: str = "CLEAN1", site_kind: str | None = None
    ) -> Person:
        roles = roles or ("operator",)
        username = username or f"{roles[0]}{next(_counter)}"
        make_site(site, site_kind or ("treatment" if "clinician" in roles else "manufacturing"))
        with db.transaction(actor=Actor.system("test")) as s:
            user = accounts.create_user(
                s,
                username,
                password=PASSWORD,
                roles=roles,
                site_code=site,
                full_name=username.title(),
                must_change=False,  # the person's own password, as typed at the console
            )
            user_id = user.id
        return Person(username, PASSWORD, tuple(roles), site, user_id)

    return make


class ApiClient:
    """A test client that speaks JSON with a bearer token, as scanners and LIMS do."""

    def __init__(self, client: FlaskClient, token: str | None = None) -> None:
        self.client = client
        self.token = token

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra or {})
        return headers

    def get(self, path: str, **kw: Any) -> Any:
        response = self.client.get(path, headers=self._headers(kw.pop("headers", None)), **kw)
        recording.record("GET", path, response)
        return response

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        response = self.client.post(
            path, json=json, headers=self._headers(kw.pop("headers", None)), **kw
        )
        recording.record("POST", path, response)
        return response


@pytest.fixture
def login(client: FlaskClient) -> Callable[[Person], ApiClient]:
    def as_person(person: Person) -> ApiClient:
        response = client.post(
            "/api/v1/auth/tokens", json={"username": person.username, "password": person.password}
        )
        assert response.status_code == 201, response.get_json()
        return ApiClient(client, response.get_json()["token"])

    return as_person


@pytest.fixture
def anonymous(client: FlaskClient) -> ApiClient:
    return ApiClient(client)


def sig(meaning: str = "performed", password: str = PASSWORD, reason: str | None = None) -> dict:
    """The ``signature`` member of a signing request."""
    body = {"password": password, "meaning": meaning}
    if reason:
        body["reason"] = reason
    return body
