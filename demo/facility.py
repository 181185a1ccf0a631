"""Who and where in the demo (issue 18): the operators' training records, the cleanroom's
rooms with their grades, the line clearances between patients and environmental
monitoring results.

Recorded through training's and rooms' services by the people who would do it: QA grants
the training (never to themselves), the admin registers the rooms, the operator performs
a line clearance before a room serves another patient and the second operator verifies it
(two people, EU GMP Part IV section 9), QC enters the EM results. The results pass Annex 1
(one settle plate at the site's alert level, so the trend chart shows the warning line at
work); no excursion, so the demo's batches keep the states they show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import rooms.services as rooms_services
import training.services as training_services
from demo.supplies import Seeding
from gmp_mes.clock import utcnow
from processes.definitions import Step

# code, grade, name: the closed-processing suite and the aseptic filling room.
ROOMS: tuple[tuple[str, str, str], ...] = (
    ("CR-C1", "C", "Processing suite 1 (closed systems, grade C)"),
    ("CR-B1", "B", "Aseptic filling room (BSC-01 grade A in a grade B background)"),
)
ROOM_OF_GRADE = {"C": "CR-C1", "B": "CR-B1"}
QUALIFICATIONS = ("cart_manufacturing", "aseptic_processing")
TRAINED = ("operator", "operator2")
# sample type, value per day (cfu), days ago; every value within grade B's action limits.
EM_PLAN: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("CR-B1", "settle_plate", (0, 1, 0, 0, 2, 0, 1, 3, 0, 1)),
    ("CR-B1", "air_active", (0, 0, 1, 0, 0, 2, 0, 0, 1, 0)),
    ("CR-C1", "settle_plate", (4, 7, 3, 12, 6, 2, 9, 5, 8, 4)),
)


@dataclass
class Facility:
    """The room each grade of step uses, and the patient each room last served."""

    last_coi: dict[str, str] = field(default_factory=dict)  # room -> COI id

    @staticmethod
    def room_for(step: Step) -> str | None:
        return ROOM_OF_GRADE.get(step.needs.room_grade or "")


def seed(seeder: Seeding) -> Facility:
    """Training records, rooms and a month of EM results, as the demo's people would."""
    s, acting, sig = seeder.s, seeder.acting, seeder.sig
    until = utcnow() + timedelta(days=365)
    for username in TRAINED:
        for code in QUALIFICATIONS:
            with acting("qa") as qa:
                training_services.grant_qualification(
                    s, username, code=code, valid_until=until, user_id=qa.id,
                    signature=sig("approved", "training and aseptic process simulation passed"))
    for code, grade, name in ROOMS:
        with acting("admin") as admin:
            rooms_services.create_room(s, code=code, site_code="CLEAN-1", grade=grade,
                                       name=name, user_id=admin.id)
    with acting("admin") as admin:  # the site warns before Annex 1 acts (grade B plates)
        rooms_services.set_alert_limit(s, site_code="CLEAN-1", grade="B",
                                       sample_type="settle_plate", alert_limit=3,
                                       user_id=admin.id)
    now = utcnow()
    for room, sample_type, values in EM_PLAN:
        for days_ago, value in enumerate(reversed(values)):
            with acting("qc") as qc:
                rooms_services.record_em_result(
                    s, room, sample_type=sample_type, value=value,
                    sampled_at=now - timedelta(days=days_ago + 1, hours=2), user_id=qc.id,
                    signature=sig("performed"), location="at the working position")
    return Facility()


def before_step(seeder: Seeding, facility: Facility, coi_id: str, step: Step) -> None:
    """A verified line clearance before a room serves another patient (SPEC §12)."""
    room = facility.room_for(step)
    if room is None:
        return
    last = facility.last_coi.get(room)
    if last is not None and last != coi_id:
        with seeder.acting("operator") as operator:
            clearance = rooms_services.perform_clearance(
                seeder.s, room, user_id=operator.id, signature=seeder.sig("performed"))
        with seeder.acting("operator2") as verifier:
            rooms_services.verify_clearance(seeder.s, room, clearance.id, user_id=verifier.id,
                                            signature=seeder.sig("verified"))
    facility.last_coi[room] = coi_id
