"""The labels domain: installed as a domain (``gmp_mes.registry``), set up by init_app."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api
from sqlalchemy.orm import Session

# The domains this one builds on (registered before it; gmp_mes.registry).
REQUIRES: tuple[str, ...] = ()


def _ensure_signing_key(app: Flask, session: Session) -> list[str]:
    """``gmp-mes init``: create the Ed25519 label signing key if it is missing, unless this
    database has labels signed by a key that is not here (a restore into a new instance
    folder): a new key would make every one of them fail as forged."""
    from labels import keys, services

    key_path = app.config["GMP_SETTINGS"].signing_key
    if not key_path.exists():
        missing = services.unknown_signing_keys(session, key_path)
        if missing:
            raise services.SigningKeyUnavailable(
                f"labels in this database were signed by key(s) {', '.join(missing)}, which "
                f"are not at {key_path}: restore that key file (and {key_path.stem}.retired/) "
                "from the backup of the instance folder; no new key was created")
    return keys.ensure_key(key_path)


def init_app(app: Flask, api: Api) -> None:
    """Register this domain's API blueprint, pages, CLI commands and jobs."""
    from gmp_mes.registry import NavGroup, add_init_hook, add_job, add_nav
    from labels import api as labels_api
    from labels import cli, pages, services

    services.set_default_key_path(app.config["GMP_SETTINGS"].signing_key)
    add_init_hook(app, _ensure_signing_key)
    add_job(app, services.sweep_job)  # stale printer jobs left by a crash -> failed
    app.cli.add_command(cli.labels_group)
    api.register_blueprint(labels_api.blp)
    app.register_blueprint(pages.bp)
    _register_installation_key(app)
    add_nav(app, "labels_pages.sheet_page", "Labels", ("operator", "clinician"),
            group=NavGroup.WORK)
    add_nav(app, "labels_pages.setup_page", "Label setup", ("admin",), group=NavGroup.ADMIN)
    app.jinja_env.globals["label_printers"] = pages.site_printers


def _register_installation_key(app: Flask) -> None:
    """The label signing key is the installation key: it also signs the audit trail's
    checkpoints (gmp_mes.checkpoints), which the core reaches only through this."""
    from pathlib import Path

    from gmp_mes.checkpoints import InstallationKey, register_installation_key
    from labels import keys

    path = Path(app.config["GMP_SETTINGS"].signing_key)

    def sign(message: bytes) -> tuple[str, bytes]:
        ring = keys.keyring(path)
        return keys.key_id(ring.current_public), ring.private_key.sign(message)

    def public_keys() -> dict[str, keys.Ed25519PublicKey]:
        return {keys.key_id(k): k for k in keys.keyring(path).public_keys}

    register_installation_key(app, InstallationKey(sign, public_keys))
