"""Application factory: the core, then every installed domain (``gmp_mes.registry``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from flask import Flask
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

from gmp_mes import http, idempotency, registry
from gmp_mes.db import Database
from gmp_mes.deadline import Timeouts
from gmp_mes.schemas import ProblemSchema
from gmp_mes.settings import Settings, load_settings


class ProblemApi(Api):
    """flask-smorest renders its own error bodies; ours are RFC 9457 problems.

    A blueprint's routes are written into the OpenAPI document when the document is
    first read (``/api/v1/openapi.json``, ``flask openapi``, anything touching ``spec``),
    not when the blueprint is registered: documenting every route is a third of
    building an application, which a node needs only when asked for its contract and
    the test suite pays once per test. Blueprints are documented in the order they were
    registered (``register_field`` and ``register_converter`` read ``spec`` first), so
    the document is the same as when written at once."""

    ERROR_SCHEMA = ProblemSchema

    def __init__(self, app: Flask | None = None, **kwargs: Any) -> None:
        # (blueprint, name, url-prefix parameters) in registration order; the first
        # ``_started`` are being or have been documented, the first ``_finished`` are.
        self._blueprints: list[tuple[Any, str, Any]] = []
        self._started = self._finished = 0
        self._documenting = threading.RLock()  # re-entrant: documenting may read ``spec``
        self._spec: Any = None
        super().__init__(app, **kwargs)

    @property
    def spec(self) -> Any:
        if self._finished < len(self._blueprints):
            # Two first requests at once: the second waits for the whole document.
            with self._documenting:
                while self._started < len(self._blueprints):
                    blp, name, parameters = self._blueprints[self._started]
                    self._started += 1
                    try:
                        blp.register_views_in_doc(self, self._app, self._spec, name=name,
                                                  parameters=parameters)
                    except BaseException:
                        self._started -= 1  # a broken route doc fails every read, not once
                        raise
                    self._spec.tag({"name": name, "description": blp.description})
                self._finished = len(self._blueprints)
        return self._spec

    @spec.setter
    def spec(self, value: Any) -> None:
        self._spec = value

    def register_blueprint(self, blp: Any, *, parameters: Any = None, **options: Any) -> None:
        """flask-smorest's own (0.47), with the documentation deferred to ``spec``."""
        name = options.get("name", blp.name)
        self._app.extensions["flask-smorest"]["blp_name_to_api"][name] = self
        self._app.register_blueprint(blp, **options)
        self._blueprints.append((blp, name, parameters))

    def handle_http_exception(self, error: HTTPException) -> Any:
        return http.handle_http_exception(error)

    def _register_responses(self) -> None:
        """Error responses documented as what they are: ``application/problem+json``."""
        import http as http_status

        from flask_smorest.utils import prepare_response

        for status in http_status.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if not 100 <= status < 200 and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, http.PROBLEM_JSON)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "Error (RFC 9457 problem)", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, http.PROBLEM_JSON)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)


def create_app(test_config: dict[str, Any] | None = None,
               domains: Sequence[registry.Domain] | None = None) -> Flask:
    """The application with every installed domain (or only ``domains``), in the order
    of their requirements."""
    settings = load_settings(test_config)
    app = http.GmpFlask("gmp_mes", instance_path=str(settings.instance_path))
    app.config.update(
        SECRET_KEY=settings.secret_key,
        GMP_SETTINGS=settings,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=settings.session_ttl_minutes),
        MAX_CONTENT_LENGTH=1024 * 1024,
        API_TITLE="gmp-mes",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        API_SPEC_OPTIONS={
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}],
        },
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    app.extensions["gmp_mes.db"] = Database(settings.database_url, timeouts=timeouts_of(settings))
    from gmp_mes.accounts import Policy

    app.extensions["gmp_mes.db"].session_info["policy"] = Policy.from_settings(settings)
    registry.of(app).domains = list(registry.installed_domains() if domains is None
                                    else domains)
    if settings.trusted_proxies:
        # Behind a TLS-terminating proxy: request.is_secure (HSTS) and the client address
        # come from the X-Forwarded-* headers of that many proxies, no more.
        from werkzeug.middleware.proxy_fix import ProxyFix

        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)  # type: ignore[method-assign]
    http.install(app)
    api = ProblemApi(app)
    header = idempotency.plugin()  # Idempotency-Key documented on every POST (SPEC §7)
    header.init_spec(api.spec)
    api.spec.plugins.append(header)
    _register_core(app, api)
    for domain in registry.of(app).domains:
        domain.init_app(app, api)
    _register_core_jobs(app)
    return app


def _register_core(app: Flask, api: Api) -> None:
    from gmp_mes import admin_pages, alerts_api, alerts_pages, api_docs, cli, pages
    from gmp_mes import api as core_api

    api.register_blueprint(core_api.blp)
    api.register_blueprint(alerts_api.blp)
    app.register_blueprint(core_api.health)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api_docs.bp)
    alerts_pages.init_app(app)
    admin_pages.init_app(app)
    cli.register(app)
    from gmp_mes import ratelimit

    registry.add_job(app, ratelimit.job)  # ended rate-limit windows
    registry.add_job(app, idempotency.purge_job)


def _register_core_jobs(app: Flask) -> None:
    from gmp_mes import checkpoints, clock_pages

    # After the domains' jobs: a checkpoint then signs what this round's sweep wrote.
    registry.add_job(app, checkpoints.job)
    clock_pages.init_app(app)


def timeouts_of(settings: Settings) -> Timeouts:
    return Timeouts(
        connect=settings.db_connect_timeout,
        statement=settings.db_statement_timeout,
        lock=settings.db_lock_timeout,
        network=settings.db_network_timeout,
        keepalives_idle=settings.db_keepalives_idle,
    )


def settings_of(app: Flask) -> Settings:
    return app.config["GMP_SETTINGS"]

