"""The demo's logistics plan (SPEC §13, §14; issue 19): the room bookings the clinicians
made with the cleanroom before each apheresis, through schedule's services, and the
temperature-logged shipment of Maria Schneider's bag (logistics' services).

Two aseptic suites are booked (the whole manufacturing window needs grade B, the fill's
grade). Sofia Rossi's and Lukas Brandt's batches started on their bookings (the batch
links to its booking); Hannah Wolf's room is free only after Sofia's window, so her
booking warns that the start is past the starting material's hold time; Lea Hoffmann's
apheresis is planned after Lukas's window with an infusion 17 days later, before the
sterility result: the booking warns that only a conditional release could make it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import labels.services as labels_services
import logistics.services as logistics_services
import rooms.services as rooms_services
import schedule.services as schedule_services
from demo.supplies import Seeding
from gmp_mes.clock import utcnow

PROCESS = "CART-AUTO"
SUITES: tuple[tuple[str, str, str], ...] = (
    ("CR-B2", "B", "Aseptic suite 2 (isolator, grade A in a grade B background)"),
)
# scenario -> the suite its batch is booked in
BOOKED_BEFORE_BATCH = {"in_process_expansion": "CR-B1", "in_process_receipt": "CR-B2"}
INFUSION_AFTER = timedelta(days=21)  # after the fill's release and every result


def seed(seeder: Seeding) -> None:
    """The second aseptic suite (registered by the admin)."""
    for code, grade, name in SUITES:
        with seeder.acting("admin") as admin:
            rooms_services.create_room(seeder.s, code=code, site_code="CLEAN-1",
                                       grade=grade, name=name, user_id=admin.id)


def _book(seeder: Seeding, clinician: str, coi_id: str, room: str, apheresis_at: datetime,
          infusion_at: datetime, start: datetime | None = None) -> None:
    with seeder.acting(clinician) as user:
        schedule_services.book_room(
            seeder.s, user=user, coi_id=coi_id, process_code=PROCESS, room=room,
            apheresis_at=apheresis_at, planned_infusion_at=infusion_at,
            manufacturing_start=start)


def _free_from(seeder: Seeding, room: str) -> datetime:
    """The end of the room's last booked window (now when it has none)."""
    booked = schedule_services.list_bookings(seeder.s, room=room, status="booked")
    return max((b.manufacturing_end for b in booked), default=utcnow())


def before_batch(seeder: Seeding, clinician: str, coi_id: str, scenario: str,
                 apheresis_at: datetime) -> None:
    """Book the suite before the batch starts, so the batch links to its booking."""
    room = BOOKED_BEFORE_BATCH.get(scenario)
    if room is not None:
        _book(seeder, clinician, coi_id, room, apheresis_at, apheresis_at + INFUSION_AFTER)


def after_collection(seeder: Seeding, clinician: str, coi_id: str, scenario: str,
                     apheresis_at: datetime) -> None:
    """Hannah Wolf: collected, but CR-B1 is free only after Sofia's window (the booking
    warns: past the hold time)."""
    if scenario == "collected_expiring":
        start = _free_from(seeder, "CR-B1")
        _book(seeder, clinician, coi_id, "CR-B1", apheresis_at,
              start + timedelta(days=12) + INFUSION_AFTER, start=start)


def after_enrolment(seeder: Seeding, clinician: str, coi_id: str, scenario: str) -> None:
    """Lea Hoffmann: apheresis the day after CR-B2 is free, infusion 17 days later (before
    the 7-day sterility result after the fill: the booking warns)."""
    if scenario == "enrolled":
        apheresis = _free_from(seeder, "CR-B2") + timedelta(days=1)
        _book(seeder, clinician, coi_id, "CR-B2", apheresis, apheresis + timedelta(days=17))


# Six hours in the vapour phase of a dry shipper, one reading a minute, slowly warming
# from -190 °C by 7.5 °C with the logger's jitter, within the -196 to -150 °C condition:
# the shipment needs no QA disposition.
TRANSIT_MINUTES = 360


def _transit_log(start: datetime) -> bytes:
    lines = ["timestamp,temperature_c"]
    lines += [f"{(start + timedelta(minutes=i)).isoformat()},"
              f"{-190.0 + 7.5 * i / TRANSIT_MINUTES + ((i * 37) % 7 - 3) * 0.1:.1f}"
              for i in range(TRANSIT_MINUTES)]
    return ("\n".join(lines) + "\n").encode()


def logged_shipment(seeder: Seeding, bag: str, origin: str, destination: str,
                    clinician: str) -> None:
    """The bag shipped in a dry shipper with a data logger, its log uploaded by the
    operator, and received at the hospital by scanning its label (SPEC §14)."""
    with seeder.acting("operator") as operator:
        shipment = logistics_services.create_shipment(
            seeder.s, items=[bag], from_site=origin, to_site=destination, min_c=-196.0,
            max_c=-150.0, user=operator, shipper_id="DS-07", logger_id="LOG-2231",
            courier="BioCour Express")
        logistics_services.upload_log(
            seeder.s, shipment.shipment_id,
            data=_transit_log(utcnow() - timedelta(minutes=TRANSIT_MINUTES)), user=operator)
    label = labels_services.payload_for_item(seeder.s, bag)
    with seeder.acting(clinician) as receiver:
        logistics_services.receive_shipment(
            seeder.s, shipment.shipment_id, site=destination, payloads=[label],
            user=receiver, location="Pharmacy LN2 dry shipper")
