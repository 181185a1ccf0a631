"""Settings: ``config/settings.toml`` overridden by ``GMP_MES_*`` environment variables.

A missing or invalid setting raises :class:`SettingsError` with one clear line;
the CLI prints it and exits non-zero instead of a traceback.
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(os.environ.get("GMP_MES_CONFIG_DIR", PROJECT_ROOT / "config"))
FIN_PATTERN = re.compile(r"^[A-Z][0-9A-Z]{4}$")


class SettingsError(Exception):
    """A setting is missing or invalid; the message names it."""


@dataclass(frozen=True)
class Settings:
    instance_path: Path
    database_url: str
    secret_key: str
    signing_key: Path
    facility_id: str = "A9999"
    process_dir: Path | None = None
    timezone: str = "UTC"
    smtp_url: str | None = None
    webhook_url: str | None = None
    sweep_seconds: int = 60
    token_ttl_minutes: int = 480
    session_ttl_minutes: int = 30
    max_failed_logins: int = 5
    deviation_alert_days: int = 7
    # Accounts (21 CFR 11.300): absolute page-session lifetime beside the idle timeout,
    # password policy and expiry (0 = never), failed-attempt rate limits (`limits` syntax).
    session_max_minutes: int = 720
    password_min_length: int = 12
    password_max_age_days: int = 0
    rate_limit_account: str = "3 per 5 minutes"
    rate_limit_client: str = "30 per 5 minutes"
    # A signed audit checkpoint at most this often (gmp_mes.checkpoints).
    checkpoint_minutes: int = 60
    # A forward clock step larger than this since the last sweep holds expiry
    # (gmp_mes.clockwatch) until an admin confirms the clock.
    clock_jump_minutes: int = 60
    # PostgreSQL timeouts (seconds; 0 turns one off). See DEVELOPING.md "Timeouts".
    db_connect_timeout: int = 5
    db_statement_timeout: int = 30
    db_lock_timeout: int = 10
    db_network_timeout: int = 35
    db_keepalives_idle: int = 15
    health_timeout: int = 2
    # Seconds to connect to a label printer and to hand it a job (raw TCP, labels).
    printer_timeout: int = 5
    # Behind a TLS-terminating proxy: Secure cookies, and how many proxies to trust
    # for X-Forwarded-For/-Proto/-Host (werkzeug ProxyFix); 0 trusts none.
    session_cookie_secure: bool = False
    trusted_proxies: int = 0
    web_threads: int = 8
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def builtin_process_dir(self) -> Path:
        return CONFIG_DIR / "processes"


_INT_KEYS = {
    "sweep_seconds",
    "token_ttl_minutes",
    "session_ttl_minutes",
    "max_failed_logins",
    "deviation_alert_days",
    "session_max_minutes",
    "password_min_length",
    "password_max_age_days",
    "checkpoint_minutes",
    "clock_jump_minutes",
    "web_threads",
    "health_timeout",
    "printer_timeout",
}
_ZERO_ALLOWED = {"password_max_age_days"}
_RATE_KEYS = ("rate_limit_account", "rate_limit_client")
# Whole numbers that may be 0 (turned off).
_NATURAL_KEYS = {
    "db_connect_timeout",
    "db_statement_timeout",
    "db_lock_timeout",
    "db_network_timeout",
    "db_keepalives_idle",
    "trusted_proxies",
}
_BOOL_KEYS = {"session_cookie_secure"}
_KNOWN = {f.name for f in fields(Settings)} - {"extra", "instance_path"}


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML ({exc})") from exc


def _from_environment() -> dict[str, str]:
    return {
        key: os.environ[f"GMP_MES_{key.upper()}"]
        for key in _KNOWN
        if os.environ.get(f"GMP_MES_{key.upper()}")
    }


def _rate(key: str, text: str) -> str:
    """A rate such as ``3 per 5 minutes`` (the `limits` package's notation)."""
    from limits import parse_many

    try:
        parsed = parse_many(text)
    except ValueError:
        parsed = []
    if len(parsed) != 1:
        raise SettingsError(f"GMP_MES_{key.upper()} must be one rate like '3 per 5 minutes'")
    return text


def _instance_secret(instance_path: Path) -> str:
    """A per-installation secret kept in the instance folder (development convenience)."""
    path = instance_path / "secret_key"
    if not path.exists():
        # Created 0600 from the start: never readable by others, not even for a moment.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: read theirs
            return path.read_text().strip()
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Merge file, environment and explicit overrides (tests) and validate."""
    instance_path = Path(
        (overrides or {}).get("instance_path")
        or os.environ.get("GMP_MES_INSTANCE_PATH")
        or PROJECT_ROOT / "instance"
    )
    raw: dict[str, Any] = _read_file(CONFIG_DIR / "settings.toml")
    unknown = set(raw) - _KNOWN
    if unknown:
        raise SettingsError(f"config/settings.toml: unknown setting {sorted(unknown)[0]!r}")
    raw.update(_from_environment())
    raw.update({k: v for k, v in (overrides or {}).items() if k != "instance_path"})
    try:
        instance_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"instance folder {instance_path}: {exc.strerror}") from exc
    return _validate(raw, instance_path)


def _validate(raw: dict[str, Any], instance_path: Path) -> Settings:
    values: dict[str, Any] = {"instance_path": instance_path}
    for key in _INT_KEYS & raw.keys():
        try:
            values[key] = int(raw[key])
        except (TypeError, ValueError):
            raise SettingsError(f"GMP_MES_{key.upper()} must be a whole number") from None
        if values[key] < 0 or (values[key] == 0 and key not in _ZERO_ALLOWED):
            raise SettingsError(f"GMP_MES_{key.upper()} must be positive")
    for key in _RATE_KEYS:
        if raw.get(key):
            values[key] = _rate(key, str(raw[key]))
    for key in _NATURAL_KEYS & raw.keys():
        try:
            values[key] = int(raw[key])
        except (TypeError, ValueError):
            raise SettingsError(f"GMP_MES_{key.upper()} must be a whole number") from None
        if values[key] < 0:
            raise SettingsError(f"GMP_MES_{key.upper()} must be 0 or more")
    for key in _BOOL_KEYS & raw.keys():
        value = raw[key]
        if isinstance(value, str):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise SettingsError(f"GMP_MES_{key.upper()} must be true or false")
            value = value.lower() in ("1", "true", "yes")
        values[key] = bool(value)
    url = raw.get("database_url") or f"sqlite:///{instance_path / 'gmp_mes.sqlite'}"
    if url.startswith(("postgresql://", "postgres://")):
        raise SettingsError(
            "GMP_MES_DATABASE_URL: use postgresql+psycopg:// (postgresql:// selects psycopg2)"
        )
    if not url.startswith(("sqlite:", "postgresql+psycopg:")):
        raise SettingsError("GMP_MES_DATABASE_URL must be a sqlite: or postgresql+psycopg: URL")
    values["database_url"] = url
    facility = str(raw.get("facility_id", "A9999")).upper()
    if not FIN_PATTERN.match(facility):
        raise SettingsError(
            "GMP_MES_FACILITY_ID must be a 5-character ISBT 128 facility code like A9999"
        )
    values["facility_id"] = facility
    timezone = str(raw.get("timezone", "UTC"))
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"GMP_MES_TIMEZONE: unknown time zone {timezone!r}") from None
    values["timezone"] = timezone
    if raw.get("process_dir"):
        process_dir = Path(raw["process_dir"])
        if not process_dir.is_dir():
            raise SettingsError(f"GMP_MES_PROCESS_DIR: {process_dir} is not a directory")
        values["process_dir"] = process_dir
    for key in ("smtp_url", "webhook_url"):
        if raw.get(key):
            values[key] = str(raw[key])
    values["secret_key"] = str(raw.get("secret_key") or _instance_secret(instance_path))
    values["signing_key"] = Path(raw.get("signing_key") or instance_path / "signing_key.pem")
    return Settings(**values)
