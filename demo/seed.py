"""The demonstration data set: every page meaningful on the first ``make run``.

Everything is created through the domains' service functions (accounts,
identity, labels, batches, qc, alerts), as the people who would do it in a
real plant: the operator records the steps, a second operator verifies the
critical ones, QA approves the process and decides releases, the clinician
enrols, collects and administers. Times are the real "now" (the services read
the clock), so hold times, expiry countdowns and post-thaw windows are live.

One transaction for the whole set: either all of it exists or none of it, and
a second run finds the marker site and stops with one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from sqlalchemy import select
from sqlalchemy.orm import Session

import batches.services as batches_services
import identity.services as identity_services
import labels.services as labels_services
import processes.services as processes_services
import qc.services as qc_services
from demo import bookings, facility, supplies
from gmp_mes import accounts
from gmp_mes.audit import Actor
from gmp_mes.cli import unit_of_work
from gmp_mes.clock import utcnow
from gmp_mes.models import Site, User
from gmp_mes.signatures import SignatureInput
from identity.models import Patient

DEMO_PASSWORD = "demo-password-1"
PROCESS = "CART-AUTO"
# The version the demo runs: the newest, whose every need an installed domain checks
# (v7: lots, equipment, qualifications, rooms, the expansion forecast, follow-up visits,
# the schedule its room bookings are planned from).
PROCESS_VERSION = 7

APHERESIS, CLEANROOM, NORTH, SOUTH = "APH-CITY", "CLEAN-1", "HOSP-NORTH", "HOSP-SOUTH"
MARKER_SITE = CLEANROOM

SITES: tuple[tuple[str, str, str, str], ...] = (
    (APHERESIS, "collection", "City Apheresis Centre", "Europe/Berlin"),
    (CLEANROOM, "manufacturing", "Cell Therapy Cleanroom 1", "Europe/Berlin"),
    (NORTH, "treatment", "North University Hospital, Haematology", "Europe/Berlin"),
    (SOUTH, "treatment", "South General Hospital, Oncology", "Europe/Vienna"),
)

# user name, roles, site, printed name
USERS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    ("admin", ("admin",), CLEANROOM, "Ada Admin"),
    ("operator", ("operator",), CLEANROOM, "Olga Operator"),
    ("operator2", ("operator",), CLEANROOM, "Omar Second-Operator"),
    ("qc", ("qc",), CLEANROOM, "Quinn QC-Analyst"),
    ("qa", ("qa",), CLEANROOM, "Quentin QA"),
    ("qa2", ("qa",), CLEANROOM, "Querida Second-QA"),
    ("clinician", ("clinician",), NORTH, "Clara Clinician"),
    ("clinician2", ("clinician",), SOUTH, "Carl Second-Clinician"),
    # The apheresis centre's nurse: collections leave the centre by her hand (custody is
    # recorded at the caller's own site only).
    ("apheresis", ("clinician",), APHERESIS, "Paula Apheresis-Nurse"),
)


def _step_values(day: int = 1) -> dict[str, dict[str, Any]]:
    """In-limit values of CART-AUTO (config/processes/cart-auto-v*.toml; v1's fill also
    asks labels_verified, left out where the version has no such parameter)."""
    return {
        "receipt": {"coi_verified": True, "temperature_c": 4.6, "volume_ml": 212.0,
                    "total_nucleated_cells": 1.18e10, "cd3_pct": 46.5},
        "selection": {"cells_after_selection": 3.9e9, "purity_pct": 94.2,
                      "viability_pct": 96.1},
        "activation": {"seeded_cells": 1.5e8, "reagent_lot": "TXA-2611-0417"},
        "transduction": {"vector_lot": "LV-CD19-BB-0093", "moi": 5.0},
        "expansion": {"viable_cells": 1.5e8 * (2.2 ** day),
                      "viability_pct": 93.0 - day * 0.8, "culture_volume_ml": 100.0 + 70 * day},
        "harvest": {"total_viable_cells": 4.1e9, "viability_pct": 91.4,
                    "car_expression_pct": 38.2},
        "fill": {"car_t_cells_per_bag": 1.1e8, "fill_volume_ml": 20.0, "dmso_pct": 10.0,
                 "labels_verified": True, "bags": 2},
        "label_check": {},
        "cryopreservation": {"freeze_profile_ok": True, "end_temperature_c": -100.0,
                             "storage_temperature_c": -180.0},
    }


def _wristband(patient: Patient) -> str:
    """The item id of the patient's wristband (enrolment creates it)."""
    if patient.wristband_item_id is None:
        raise ValueError(f"patient {patient.coi_id} has no wristband")
    return patient.wristband_item_id


# The patients of the demo: (given, family, date of birth, MRN, treatment site, scenario).
PATIENTS: tuple[tuple[str, str, date, str, str, str], ...] = (
    ("Maria", "Schneider", date(1968, 3, 14), "MRN-400117", NORTH, "administered"),
    ("Jonas", "Weber", date(1975, 11, 2), "MRN-400233", SOUTH, "thawed"),
    ("Aylin", "Demir", date(1982, 6, 21), "MRN-400358", NORTH, "awaiting_release"),
    ("Peter", "Novak", date(1959, 1, 30), "MRN-400412", NORTH, "on_hold"),
    ("Sofia", "Rossi", date(1990, 9, 8), "MRN-400561", SOUTH, "in_process_expansion"),
    ("Lukas", "Brandt", date(1971, 4, 17), "MRN-400689", NORTH, "in_process_receipt"),
    ("Emma", "Fischer", date(1985, 12, 24), "MRN-400702", NORTH, "rejected"),
    ("Noah", "Keller", date(1963, 7, 5), "MRN-400815", SOUTH, "released_in_storage"),
    ("Hannah", "Wolf", date(1979, 2, 11), "MRN-400947", NORTH, "collected_expiring"),
    ("David", "Klein", date(1955, 10, 19), "MRN-401023", SOUTH, "collected_expired"),
    ("Lea", "Hoffmann", date(1993, 5, 27), "MRN-401164", NORTH, "enrolled"),
    ("Anna", "Becker", date(1966, 8, 3), "MRN-401278", NORTH, "positive_after_release"),
)

# In-specification QC results of CART-AUTO v1 (qualitative tests take an outcome).
QC_VALUES: dict[str, Any] = {
    "sterility": "negative", "mycoplasma": "negative", "endotoxin": 0.8, "viability": 91.0,
    "dose": 1.2e6, "identity": 38.0, "potency": 2350.0, "vector_copy_number": 1.9,
}

# Scenarios that need the QC domain's release services.
NEEDS_QC = {"administered", "thawed", "rejected", "released_in_storage",
            "positive_after_release"}


@dataclass
class Summary:
    """What the seed created, for the one-screen report and the tests."""

    sites: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    patients: dict[str, str] = field(default_factory=dict)  # coi_id -> scenario
    batches: dict[str, str] = field(default_factory=dict)  # batch_number -> scenario
    states: dict[str, str] = field(default_factory=dict)  # batch_number -> batch status
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Demo:
    """The seeding run: one session, actors switched as different people act."""

    def __init__(self, session: Session, app: Flask) -> None:
        self.s = session
        self.app = app
        self.users: dict[str, User] = {}
        self.summary = Summary()
        self.identity = identity_services
        self.batches = batches_services
        self.processes = processes_services
        self.labels = labels_services
        self.qc = qc_services
        self.supplies = supplies.Supplies()
        self.facility = facility.Facility()

    # --- helpers ---------------------------------------------------------------------------

    @contextmanager
    def acting(self, username: str) -> Iterator[User]:
        """Attribute what follows to ``username`` (the audit reads the actor at flush)."""
        self.s.flush()
        previous = self.s.info.get("actor")
        user = self.users[username]
        self.s.info["actor"] = Actor(user.username, user.id, user.full_name)
        try:
            yield user
            self.s.flush()
        finally:
            self.s.info["actor"] = previous

    @staticmethod
    def sig(meaning: str, reason: str | None = None) -> SignatureInput:
        return SignatureInput(password=DEMO_PASSWORD, meaning=meaning, reason=reason)

    def verifier(self) -> batches_services.VerifierInput:
        return self.batches.VerifierInput(username="operator2", password=DEMO_PASSWORD)

    def print_label(self, item_id: str, username: str, workstation: str) -> None:
        with self.acting(username) as user:
            self.labels.print_label(
                self.s, item_id,
                self.labels.PrintRequest(format="zpl", workstation=workstation),
                user_id=user.id,
            )

    # --- the set ------------------------------------------------------------------------------

    def run(self) -> Summary:
        self.sites_and_users()
        self.approve_process()
        self.supplies = supplies.seed(self)
        self.facility = facility.seed(self)
        bookings.seed(self)
        for given, family, born, mrn, site, scenario in PATIENTS:
            self.patient(given, family, born, mrn, site, scenario)
        self.forged_label_scan()
        for number in self.summary.batches:
            self.summary.states[number] = self.batches.get_batch(self.s, number).status
        return self.summary

    def sites_and_users(self) -> None:
        for code, kind, name, zone in SITES:
            accounts.create_site(self.s, code, kind=kind, name=name, timezone=zone)
            self.summary.sites.append(code)
        for username, roles, site, full_name in USERS:
            self.users[username] = accounts.create_user(
                self.s, username, password=DEMO_PASSWORD, roles=roles, site_code=site,
                full_name=full_name, email=f"{username}@demo.gmp-mes.org",
            )
            self.summary.users.append(username)

    def approve_process(self) -> None:
        if not self.processes.list_processes(self.s):
            self.processes.load_process_definitions(self.s)
        versions = [p for p in self.processes.list_processes(self.s) if p.code == PROCESS]
        if not versions:
            raise click.ClickException(f"process {PROCESS} is not loaded; run gmp-mes init")
        newest = next((p for p in versions if p.version == PROCESS_VERSION), None)
        if newest is None:
            raise click.ClickException(
                f"process {PROCESS} v{PROCESS_VERSION} is not loaded; run gmp-mes init")
        if not newest.approved:
            with self.acting("qa") as qa:
                self.processes.approve_process(
                    self.s, newest.code, newest.version, user_id=qa.id,
                    signature=self.sig("approved", "master batch record reviewed"),
                )

    def patient(self, given: str, family: str, born: date, mrn: str, site: str,
                scenario: str) -> None:
        clinician = "clinician" if site == NORTH else "clinician2"
        with self.acting(clinician):
            patient = self.identity.enrol_patient(
                self.s, given_name=given, family_name=family, date_of_birth=born, mrn=mrn,
                treatment_site=site,
            )
        self.summary.patients[patient.coi_id] = scenario
        self.print_label(_wristband(patient), clinician, f"{site}-WARD")
        if scenario == "enrolled":
            bookings.after_enrolment(self, clinician, patient.coi_id, scenario)
            return
        # Collected long enough ago that the starting material is still inside its
        # 48 h hold time, except the two collections that show the hold-time alerts.
        ago = {"collected_expiring": timedelta(hours=40),
               "collected_expired": timedelta(hours=50)}.get(scenario, timedelta(hours=20))
        with self.acting(clinician):
            collection = self.identity.record_collection(
                self.s, coi_id=patient.coi_id, collected_at=utcnow() - ago, site=APHERESIS,
                volume_ml=212.0,
            )
        starting = collection.item_id
        self.print_label(starting, clinician, "APH-CITY-1")
        if scenario.startswith("collected"):
            bookings.after_collection(self, clinician, patient.coi_id, scenario,
                                      collection.collected_at)
            return
        bookings.before_batch(self, clinician, patient.coi_id, scenario,
                              collection.collected_at)
        # Shipped by the apheresis centre, received at the cleanroom's goods-in: only
        # material received at the manufacturing site starts a batch.
        self.ship(starting, APHERESIS, CLEANROOM, by="apheresis", to="operator",
                  location="Goods-in 2-8 °C")
        with self.acting("operator") as operator:
            self.identity.record_custody(self.s, starting, action="move", site=CLEANROOM,
                                         user=operator, location="SM fridge 1, 2-8 °C",
                                         workstation="CLEAN-1-GOODS-IN")
            # The Start batch field takes the bag's scanned label.
            batch = self.batches.start_batch(
                self.s, item_id=self.labels.payload_for_item(self.s, starting),
                user_id=operator.id, process_code=PROCESS)
        number = batch.batch_number
        self.summary.batches[number] = scenario
        plan = {
            "in_process_receipt": ["receipt"],
            "in_process_expansion": ["receipt", "selection", "activation", "transduction",
                                     "expansion", "expansion"],
        }.get(scenario)
        self.steps(number, plan)
        if scenario == "on_hold":
            with self.acting("operator") as operator:
                self.batches.open_deviation(
                    self.s, number, severity="major", step_code="cryopreservation",
                    user_id=operator.id,
                    description="Controlled-rate freezer door alarm for 14 minutes during "
                                "the run; chamber temperature rose to -62 °C.",
                )
            return
        if scenario == "awaiting_release":
            # Part of QC is in: the release queue shows what is still missing.
            self.qc_results(number, skip=("sterility", "potency", "vector_copy_number"))
        if scenario in NEEDS_QC:
            self.qc_and_release(number, scenario, site)

    def steps(self, batch_number: str, plan: list[str] | None) -> None:
        """Record the steps in file order (all of them when ``plan`` is None)."""
        batch = self.batches.get_batch(self.s, batch_number)
        definition = self.batches.definition_of_batch(batch)
        codes = plan or [s.code for s in definition.steps
                         for _ in range(3 if s.repeatable else 1)]
        day = 0
        for code in codes:
            if code == "expansion":
                day += 1
            step = definition.step(code)
            if step is None:
                raise ValueError(f"step {code!r} is not in {batch.process_code}")
            values = {k: v for k, v in _step_values(day)[code].items()
                      if k == "bags" or step.parameter(k) is not None}
            if plan is not None and code == "expansion" and day == 2:
                # Out of the culture-volume limit (minor): a deviation that does not hold.
                values["culture_volume_ml"] = 1040.0
            # The receipt's identity check: the bag is scanned against the batch.
            scan = (self.labels.payload_for_item(self.s, batch.starting_item_id)
                    if code == "receipt" else None)
            # The label check after the fill: the label of every bag is scanned.
            scans = ([self.labels.payload_for_item(self.s, bag) for bag in
                      self.batches.final_product_item_ids(self.s, batch_number)]
                     if step.scans else None)
            # The lots and equipment the step declares, scanned as an operator would.
            supplies.before_step(self, self.supplies, batch_number, step)
            facility.before_step(self, self.facility, batch.coi_id, step)
            with self.acting("operator") as operator:
                outcome = self.batches.record_step(
                    self.s, batch_number, code, values=values, user_id=operator.id,
                    signature=self.sig("performed"),
                    verifier=self.verifier() if step.critical else None, scan=scan,
                    scans=scans,
                    resources=replace(self.supplies.resources(step),
                                      room=self.facility.room_for(step)),
                )
            for item in outcome.items:
                self.print_label(item.item_id, "operator", "CR1-LABEL")

    def ship(self, item_id: str, origin: str, destination: str, *, by: str, to: str,
             location: str) -> None:
        with self.acting(by) as sender:
            self.identity.record_custody(self.s, item_id, action="ship", site=destination,
                                         user=sender, workstation=f"{origin}-DISPATCH")
        with self.acting(to) as receiver:
            self.identity.record_custody(self.s, item_id, action="receive", site=destination,
                                         user=receiver, location=location,
                                         workstation=f"{destination}-GOODS-IN")

    def qc_results(self, batch_number: str, *, skip: tuple[str, ...] = (),
                   override: dict[str, Any] | None = None) -> None:
        """QC results for every test of the batch's spec, entered by the QC analyst."""
        values = {**QC_VALUES, **(override or {})}
        for spec in self.batches.qc_specs(self.s, batch_number):
            if spec.test in skip:
                continue
            value = values[spec.test]
            with self.acting("qc") as analyst:
                self.qc.record_result(
                    self.s, batch_number, test=spec.test, user_id=analyst.id,
                    signature=self.sig("performed"),
                    **({"outcome": value} if isinstance(value, str) else {"value": value}),
                )

    def qc_and_release(self, batch_number: str, scenario: str, site: str) -> None:
        clinician = "clinician" if site == NORTH else "clinician2"
        bags = self.batches.final_product_item_ids(self.s, batch_number)
        if scenario == "rejected":
            self.qc_results(batch_number, override={"endotoxin": 7.8})
            with self.acting("qa2") as qa:
                self.qc.reject_batch(
                    self.s, batch_number, user_id=qa.id, signature=self.sig("rejected"),
                    reason="Endotoxin 7.8 EU/mL exceeds the specification (<= 5.0 EU/mL); "
                           "OOS investigation QA-OOS-2611-07 confirmed the result.",
                )
            return
        if scenario in ("thawed", "positive_after_release"):
            # Sterility takes 7 days; the patient cannot wait: conditional release.
            self.qc_results(batch_number, skip=("sterility",))
            with self.acting("qa2") as qa:
                self.qc.release_batch(
                    self.s, batch_number, user_id=qa.id, signature=self.sig("released"),
                    conditional=True,
                    justification="Patient's disease progressing rapidly (treating physician's "
                                  "request of today); all other tests pass; sterility pending "
                                  "with no growth at 72 h.",
                )
        else:
            self.qc_results(batch_number)
            with self.acting("qa") as qa:
                self.qc.release_batch(self.s, batch_number, user_id=qa.id,
                                      signature=self.sig("released"))
        bag = bags[0]
        if scenario == "positive_after_release":
            # The bag reached the hospital, then the sterility culture turned positive:
            # SPEC §5: every bag not yet administered is blocked, QA and the treating
            # site get a critical alert at once.
            self.ship(bag, CLEANROOM, site, by="operator", to=clinician,
                      location="Pharmacy LN2 freezer 1")
            with self.acting("qc") as analyst:
                self.qc.record_result(self.s, batch_number, test="sterility",
                                      outcome="positive", user_id=analyst.id,
                                      signature=self.sig("performed"))
            return
        if scenario == "released_in_storage":
            # The first bag is on its way to the hospital, the second stays in LN2.
            with self.acting("operator") as sender:
                self.identity.record_custody(self.s, bag, action="ship", site=site,
                                             user=sender, workstation="CLEAN-1-DISPATCH")
            return
        if scenario == "administered":
            bookings.logged_shipment(self, bag, CLEANROOM, site, clinician)
        else:
            self.ship(bag, CLEANROOM, site, by="operator", to=clinician,
                      location="Pharmacy LN2 dry shipper")
        with self.acting(clinician) as nurse:
            self.identity.record_custody(self.s, bag, action="thaw", site=site, user=nurse,
                                         location="Ward 4, bed 2", workstation=f"{site}-WARD")
        if scenario == "thawed":
            return  # waiting at the bedside, inside its post-thaw window
        wristband = _wristband(self.identity.get_patient(
            self.s, self.batches.batch_coi(self.s, batch_number)))
        patient_payload = self.labels.payload_for_item(self.s, wristband)
        product_payload = self.labels.payload_for_item(self.s, bag)
        with self.acting(clinician) as nurse:
            self.identity.verify_bedside(self.s, patient_payload, product_payload, user=nurse,
                                         site_code=site)
            self.identity.administer(self.s, patient_payload, product_payload, user=nurse,
                                     site_code=site, signature=self.sig("administered"))
        # The second bag waits in the hospital's LN2 storage, received, for a second dose.
        self.ship(bags[1], CLEANROOM, site, by="operator", to=clinician,
                  location="Pharmacy LN2 freezer 2")

    def forged_label_scan(self) -> None:
        """A tampered label at the cleanroom scan station: a critical alert for QA."""
        wristband = next(
            (self.identity.get_patient(self.s, coi).wristband_item_id
             for coi in self.summary.patients), None,
        )
        if wristband is None:
            return
        genuine = self.labels.payload_for_item(self.s, wristband)
        head, _, signature = genuine.rpartition(":")
        forged = f"{head}:{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
        with self.acting("operator") as operator:
            self.identity.scan(self.s, forged, user=operator, site_code=CLEANROOM,
                               workstation="CR1-WS2")


def existing_data(session: Session) -> str | None:
    """Why the demo must not run here, or None for an empty installation.

    The demo creates accounts with a published password: it never goes into an
    installation that already has people or sites (a real one, or the demo itself).
    """
    if session.scalar(select(Site.id).where(Site.code == MARKER_SITE)) is not None and (
        session.scalar(select(User.id).where(User.username == "operator2")) is not None
    ):
        return "the demo data already exists; nothing to do"
    if session.scalar(select(User.id).limit(1)) is not None or (
        session.scalar(select(Site.id).limit(1)) is not None
    ):
        return ("skipped: this installation already has users or sites; the demo only "
                "seeds an empty one")
    return None


def seed(app: Flask) -> Summary | str:
    """Seed the demo, or say why not (a string). Commits once, then runs the scheduler's
    jobs once so that the expiry alerts are there on the first page view."""
    from gmp_mes.scheduler import run_jobs

    with unit_of_work(Actor.system("demo")) as session:
        refusal = existing_data(session)
        if refusal is not None:
            return refusal
        summary = Demo(session, app).run()
    result = run_jobs(app)
    summary.notes.extend(result.changes)
    if result.failed:
        summary.notes.append(f"failed sweep jobs: {', '.join(result.failed)}")
    return summary


@click.command("demo")
@with_appcontext
def demo_command() -> None:
    """Seed a realistic demo: sites, users per role, patients, batches in every state."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    summary = seed(app)
    if isinstance(summary, str):
        click.echo(f"demo: {summary}")
        return
    states: dict[str, int] = {}
    for status in summary.states.values():
        states[status] = states.get(status, 0) + 1
    click.echo(
        f"demo: {len(summary.sites)} sites, {len(summary.users)} users, "
        f"{len(summary.patients)} patients, {len(summary.batches)} batches "
        f"({', '.join(f'{k} {v}' for k, v in sorted(states.items()))})"
    )
    for line in summary.skipped:
        click.echo(f"demo: skipped {line}")
    click.echo(f"demo: log in as {', '.join(summary.users)} "
               f"with the password {DEMO_PASSWORD!r}")
