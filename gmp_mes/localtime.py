"""One clock for people (SPEC §9): stored times are UTC; what a person reads is the
site's local time with the zone's name, and records that leave the site (exports, PDF,
labels) carry UTC as well, local first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

FORMAT = "%Y-%m-%d %H:%M %Z"
FORMAT_SECONDS = "%Y-%m-%d %H:%M:%S %Z"


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def zone_of(user: Any) -> ZoneInfo:
    """The time zone of the user's site (UTC for a user without a site)."""
    site = getattr(user, "site", None)
    return zone(getattr(site, "timezone", None))


def parse_stored(value: datetime | str | None) -> datetime | None:
    """A stored time (aware datetime or the audit trail's ISO text) as aware UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def local(value: datetime | str | None, tz: ZoneInfo, *, seconds: bool = False) -> str:
    """``2026-12-01 21:04 CET``: the site's local time with the zone's abbreviation."""
    moment = parse_stored(value)
    if moment is None:
        return "—"
    return moment.astimezone(tz).strftime(FORMAT_SECONDS if seconds else FORMAT)


def in_utc(value: datetime | str | None) -> str:
    """``2026-12-01 20:04 UTC``: a time inside a message that goes to several sites (a
    refusal reason, an alert), to the minute."""
    return local(value, ZoneInfo("UTC"))


def local_and_utc(value: datetime | str | None, tz: ZoneInfo, *, seconds: bool = False) -> str:
    """``2026-12-01 21:04 CET (20:04 UTC)``: for records that leave the site."""
    moment = parse_stored(value)
    if moment is None:
        return "—"
    utc = moment.astimezone(UTC).strftime("%H:%M:%S UTC" if seconds else "%H:%M UTC")
    if tz.key == "UTC":
        return local(moment, tz, seconds=seconds)
    return f"{local(moment, tz, seconds=seconds)} ({utc})"


def parse_local(text: str, tz: ZoneInfo) -> datetime:
    """A time typed in a form (``datetime-local``: ``2026-12-01T09:30``) at the site's
    local time; an ISO time with an offset is taken as it is. ValueError when unreadable."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(UTC)


def signature_line(signature: Any, tz: ZoneInfo, *, with_utc: bool = False) -> str:
    """The Part 11 manifestation (11.50: printed name, date and time, meaning) of a
    signature (a Signature or its dict) at the site's local time; ``with_utc`` adds UTC
    (records that leave the site). The stored manifestation stays UTC."""
    if signature is None:
        return ""
    get = signature.get if isinstance(signature, dict) else (
        lambda key, default=None: getattr(signature, key, default))
    when = get("signed_at")
    stamp = (local_and_utc if with_utc else local)(when, tz, seconds=True)
    return f"{get('printed_name')} ({get('username')}), {stamp}, {get('meaning')}"
