"""The EM trend chart of a room and sample type (Annex 1 §9: results trended against the
alert and action limits), drawn by ``gmp_mes.charts``."""

from __future__ import annotations

from sqlalchemy.orm import Session

from gmp_mes import charts
from gmp_mes.accounts import get_site
from gmp_mes.localtime import zone
from rooms.services._common import get_room
from rooms.services.em import action_limit, alert_limit_of, results_of, unit_of


def trend_chart(session: Session, room_code: str, sample_type: str) -> charts.Chart:
    """Values over time in the site's local time, the action limit of the room's grade and
    the site's alert limit as lines, failed results flagged."""
    room = get_room(session, room_code)
    site = get_site(session, room.site_code)
    results = results_of(session, room.code, sample_type)
    unit = unit_of(sample_type)
    words = sample_type.replace("_", " ")
    lines: list[charts.Line] = []
    limit = action_limit(room.grade, sample_type)
    if limit is not None:
        lines.append(charts.Line(limit, f"action limit {limit}", "action"))
    alert = alert_limit_of(session, room.site_code, room.grade, sample_type)
    if alert is not None:
        lines.append(charts.Line(alert, f"alert limit {alert}", "alert"))
    failed = [r for r in results if not r.passed]
    alt = (f"{words} results of room {room.code} (grade {room.grade}), {len(results)} "
           f"values in {unit}, {len(failed)} above the action limit"
           + (f" {limit}" if limit is not None else " (Annex 1 sets none)")
           + (f", alert limit {alert}" if alert is not None else ""))
    return charts.Chart(
        title=f"Room {room.code} (grade {room.grade}): {words}", y_label=unit, alt=alt,
        series=[charts.Series(words, [r.sampled_at for r in results],
                              [r.value for r in results], "line+markers")],
        lines=lines,
        flags=[charts.Flag(r.sampled_at, r.value, "excursion") for r in failed],
        zone=zone(site.timezone),
        notes=() if limit is not None else (
            "Annex 1 sets no action limit for this sample type in this grade",))
