"""ISO 8601 durations (PT48H, P270D, PT3S) as used by process definitions."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """Parse an ISO 8601 duration without years or months (they have no fixed length)."""
    match = _DURATION.match(text.strip().upper()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not an ISO 8601 duration like PT48H, P270D or PT3S")
    parts = {name: float(value) for name, value in match.groupdict().items() if value}
    return timedelta(**parts)


def format_duration(delta: timedelta) -> str:
    """Render a timedelta as an ISO 8601 duration (days and time part)."""
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    time_part = "".join(
        f"{value}{unit}" for value, unit in ((hours, "H"), (minutes, "M"), (secs, "S")) if value
    )
    text = "P" + (f"{days}D" if days else "") + (f"T{time_part}" if time_part else "")
    return text if text != "P" else "PT0S"
