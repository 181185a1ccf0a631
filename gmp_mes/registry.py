"""Where domains plug into the core and into each other: the one registry (issue 16).

Two kinds of registration, both typed:

* **Per application** (``app.extensions``): navigation entries, dashboard panels, header
  search resolvers, scheduler jobs and ``gmp-mes init`` hooks. A domain adds them in its
  ``init_app(app, api)``.
* **Seams** (:class:`Seam`): a lower layer declares what it wants to know from the layers
  above it ("sections of the batch record", "warnings before a bag is given"), a higher
  layer provides it. The consumer never imports the provider, so the import graph stays
  acyclic and points downward (the layer contract in ``pyproject.toml``). A seam's
  providers are keyed by their owner, so a second application built in the same process
  (tests) replaces instead of doubling them.

Domains themselves are discovered through the ``gmp_mes.domains`` entry points of the
installed distribution (``pyproject.toml``); the core names no domain.
"""

from __future__ import annotations

import enum
import graphlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    # Types only: accounts imports audit, which imports this module.
    from flask import Flask
    from flask_smorest import Api
    from markupsafe import Markup
    from sqlalchemy.orm import Session

    from gmp_mes.accounts import Principal

ENTRY_POINT_GROUP = "gmp_mes.domains"


# --- domains ---------------------------------------------------------------------------

class DomainModule(Protocol):
    """What a domain package exposes at its top (``<domain>/__init__.py``)."""

    def init_app(self, app: Flask, api: Api) -> None: ...


@dataclass(frozen=True)
class Domain:
    """An installed domain: its package, the domains it builds on, its migrations."""

    name: str
    module: ModuleType
    requires: tuple[str, ...] = ()

    @property
    def migrations(self) -> Path | None:
        """The domain's own Alembic branch (``<domain>/migrations``), if it has tables."""
        location = Path(self.module.__file__ or "").parent / "migrations"
        return location if location.is_dir() else None

    def init_app(self, app: Flask, api: Api) -> None:
        self.module.init_app(app, api)


class RegistryError(RuntimeError):
    """The installed domains do not fit together (a missing or circular requirement)."""


def installed_domains() -> list[Domain]:
    """The installed domains, each after the domains it ``REQUIRES``."""
    found: dict[str, Domain] = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        module = entry.load()
        found[entry.name] = Domain(entry.name, module, tuple(getattr(module, "REQUIRES", ())))
    return order_domains(found)


def order_domains(domains: dict[str, Domain]) -> list[Domain]:
    """Dependencies first; ties in name order so every node registers alike."""
    for domain in domains.values():
        missing = [name for name in domain.requires if name not in domains]
        if missing:
            raise RegistryError(f"domain {domain.name} requires {', '.join(missing)}, "
                                f"which is not installed")
    sorter = graphlib.TopologicalSorter(
        {name: domains[name].requires for name in sorted(domains)})
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as exc:
        raise RegistryError(f"domains require each other in a loop: {exc.args[1]}") from exc
    return [domains[name] for name in order]


# --- per-application registrations ----------------------------------------------------

InitHook = Callable[["Flask", "Session"], list[str]]
# A scheduler job: ``job(app) -> lines describing what it changed``.
Job = Callable[["Flask"], list[str]]
# A dashboard panel: ``panel(session, user) -> (title, html) | None``.
Panel = Callable[["Session", "Principal"], "tuple[str, Markup] | None"]
# A header search resolver: ``resolver(session, user, text) -> url | None`` (or raises a
# DomainError the search page shows).
SearchResolver = Callable[["Session", "Principal", str], "str | None"]


class NavGroup(enum.IntEnum):
    """Where a page sits in the navigation bar: by the work people do, not by the order
    the domains happen to register in (within a group, registration order)."""

    ALERTS = 0
    FLOOR = 10  # the scan station, the bedside, patients, collections
    WORK = 20  # batches, labels
    QUALITY = 30  # QC, release, process approval
    ADMIN = 40  # users, sites, label setup, validation, clock


@dataclass(frozen=True)
class NavEntry:
    endpoint: str
    label: str
    roles: tuple[str, ...] = ()
    group: NavGroup = NavGroup.WORK


@dataclass
class AppRegistry:
    """What the domains registered on one application."""

    nav: list[NavEntry] = field(default_factory=list)
    panels: list[Panel] = field(default_factory=list)
    search: list[SearchResolver] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    init_hooks: list[InitHook] = field(default_factory=list)
    domains: list[Domain] = field(default_factory=list)


def of(app: Flask) -> AppRegistry:
    registry = app.extensions.get("gmp_mes.registry")
    if registry is None:
        registry = app.extensions["gmp_mes.registry"] = AppRegistry()
    return registry


def add_nav(app: Flask, endpoint: str, label: str, roles: tuple[str, ...] = (),
            group: NavGroup = NavGroup.WORK) -> None:
    """A page in the navigation bar, shown to the roles named (everyone when none)."""
    of(app).nav.append(NavEntry(endpoint, label, roles, group))


def navigation(app: Flask) -> list[NavEntry]:
    """The bar's entries: by group, then in registration order."""
    return sorted(of(app).nav, key=lambda entry: entry.group)


def add_dashboard_panel(app: Flask, panel: Panel) -> None:
    of(app).panels.append(panel)


def add_search(app: Flask, resolver: SearchResolver) -> None:
    """Domains teach the header's search box their ids (item, COI, batch, label)."""
    of(app).search.append(resolver)


def add_job(app: Flask, job: Job) -> None:
    """A scheduler job ``job(app)``, run in registration order on every round."""
    of(app).jobs.append(job)


def add_init_hook(app: Flask, hook: InitHook) -> None:
    """Run by ``gmp-mes init`` after the schema upgrade; returns lines to print."""
    of(app).init_hooks.append(hook)


# --- seams between domains -------------------------------------------------------------

P = TypeVar("P")


class Seam(Generic[P]):
    """A typed extension point declared by the layer that asks, provided from above."""

    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.__doc__ = doc
        self._providers: dict[str, P] = {}

    def provide(self, owner: str, provider: P) -> None:
        """Register (or replace) ``owner``'s provider."""
        self._providers[owner] = provider

    def providers(self) -> list[P]:
        return list(self._providers.values())

    def owners(self) -> list[tuple[str, P]]:
        """(owner, provider) pairs, in the order they were registered."""
        return list(self._providers.items())

    @contextmanager
    def only(self, providers: dict[str, P]) -> Iterator[None]:
        """These providers instead of the registered ones while the block runs (tests:
        a fake provider, or none), then the registered ones again."""
        saved = dict(self._providers)
        self._providers = dict(providers)
        try:
            yield
        finally:
            self._providers = saved

    def __repr__(self) -> str:
        return f"Seam({self.name!r}, providers={sorted(self._providers)})"


# --- the seams ---------------------------------------------------------------------------
# Each seam is declared here, in the core, with the types both sides agree on; the layer
# that asks reads ``seam.providers()``, the layer that answers calls ``seam.provide(...)``
# in its ``init_app``.

class BatchBrief(Protocol):
    """A batch as other domains show it (the batches domain's ``Batch`` is one)."""

    @property
    def batch_number(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def process_code(self) -> str: ...
    @property
    def process_version(self) -> int: ...


# A reason as the scan and bedside verdicts carry it: {"code": ..., "message": ...}.
Reason = dict[str, str]


@dataclass(frozen=True)
class RecordTable:
    """How a section of the executed batch record is shown on the batch page and in the
    PDF when the domain that writes it wants batches to draw it: a title, column headings
    and rows of display text (times already in the site's local time)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    empty: str = "none"


@dataclass(frozen=True)
class RecordSection:
    """A part of the executed batch record another domain writes (qc: "qc", "release";
    materials: "materials"; equipment: "equipment"). ``data`` is JSON-ready (str,
    numbers, bool, None, lists and dicts of them) and goes into the JSON export; ``table``,
    when given, is drawn by batches on the page and in the PDF."""

    key: str
    data: object
    table: RecordTable | None = None


patient_batches: Seam[Callable[[Session, str], Sequence[BatchBrief]]] = Seam(
    "patient_batches", "The batches made from a patient's cells (COI id), oldest first: "
    "the patient page and GET /patients/{coi_id} list them (batches answers).")

release_warnings: Seam[Callable[[Session, str], list[Reason]]] = Seam(
    "release_warnings", "What a batch's release still waits for (batch number): a bedside "
    "MATCH carries these warnings, SPEC §6 `conditional_release` (qc answers).")

batch_record_sections: Seam[Callable[[Session, str], list[RecordSection]]] = Seam(
    "batch_record_sections", "Sections of the executed batch record (batch number) that "
    "other domains keep: QC results and the release decision (qc answers).")

clock_went_backwards: Seam[Callable[[Session, int, str, str], None]] = Seam(
    "clock_went_backwards", "Raise the critical alert when the system clock reads earlier "
    "than the last audit event (last event's seq, its time, the clock's reading): audit "
    "refuses the write and asks, alerts answers (registered when gmp_mes.alerts loads; "
    "models and every writer load it).")


@dataclass(frozen=True)
class LabelSubject:
    """What a label of an item shows and signs: labels prints it, identity answers it
    (the fields identity's ``label_data`` holds)."""

    item_id: str
    kind: str
    kind_code: str
    status: str
    coi_id: str
    expires_at: datetime | None
    patient_name: str | None
    date_of_birth: date | None
    batch_number: str | None
    description: str | None
    site_code: str | None
    site_timezone: str
    storage: str | None
    # A bag of a conditionally released batch says so until QA's final release (SPEC §5).
    conditional: bool


class LabelSubjects(Protocol):
    """The items labels are printed for (identity answers)."""

    def subject(self, session: Session, item_id: str, *,
                for_update: bool = False) -> LabelSubject:
        """The item's label content; NotFound when there is no such item. With
        ``for_update`` the item row is locked until commit first (print control: one
        original, one serial per copy)."""
        ...

    def wristband(self, session: Session, coi_or_item_id: str) -> LabelSubject:
        """The patient wristband named by a COI ID or its item ID; NotFound otherwise."""
        ...

    def items_of_batch(self, session: Session, batch_number: str) -> list[str]:
        """The item IDs of a batch (a label sheet of the batch), oldest first."""
        ...


label_subjects: Seam[LabelSubjects] = Seam(
    "label_subjects", "The subject a label prints: an item's label content, the patient "
    "wristband, the items of a batch (identity answers; labels never imports identity).")


# --- what a step needs (SPEC §11, §12) -----------------------------------------------------
# processes parses the needs a step declares; batches asks every ``step_requirements``
# provider (materials, equipment; later qualifications and rooms) to check them at the
# step, with one answer per provider. A new kind of requirement is a new provider: the
# step service does not change.


@dataclass(frozen=True)
class MaterialNeed:
    """``[[steps.materials]]``: a material code and the quantity per record in the
    material's unit (None: entered at the step)."""

    material: str
    quantity: float | None = None


@dataclass(frozen=True)
class EquipmentNeed:
    """``[[steps.equipment]]``: a type of equipment the step uses."""

    type: str


@dataclass(frozen=True)
class StepNeeds:
    """What a process step declares it needs (SPEC §11)."""

    materials: tuple[MaterialNeed, ...] = ()
    equipment: tuple[EquipmentNeed, ...] = ()
    qualification: str | None = None  # performer and verifier must hold it (§12)
    room_grade: str | None = None  # a room of this grade or cleaner (§12)

    @property
    def declared(self) -> bool:
        return bool(self.materials or self.equipment or self.qualification or self.room_grade)


@dataclass(frozen=True)
class LotGiven:
    """One entry of a step body's ``materials``: a lot id or a scanned LOT label payload,
    and the quantity used (None: the quantity the step declares)."""

    lot: str
    quantity: float | None = None


@dataclass(frozen=True)
class StepResources:
    """What the operator gave at the step: lots, equipment (ids or scanned EQP label
    payloads) and the room (§12)."""

    materials: tuple[LotGiven, ...] = ()
    equipment: tuple[str, ...] = ()
    room: str | None = None


@dataclass(frozen=True)
class StepContext:
    """One step about to be recorded (or checked by a dry run), as a provider sees it."""

    batch_number: str
    coi_id: str
    process_code: str
    process_version: int
    step_code: str
    needs: StepNeeds
    given: StepResources
    at: datetime  # the step's time (system time, UTC)
    performer_id: int
    verifier_username: str | None
    site_code: str | None  # the performer's site
    # True when the step is being recorded: lock the rows the check reads until commit
    # (lots, equipment) so two steps cannot both take the last vial. False for a dry run.
    recording: bool


@dataclass
class StepCheck:
    """A provider's answer for one step.

    ``reasons``: every refusal, ``{"code", "message"}`` (SPEC §11 codes), empty when the
    step may go ahead. ``signed``: JSON-ready content the step's signatures bind (stored
    on the step record under the provider's key, shown in its record). ``apply``: called
    once the step record exists (its id), in the same transaction, to consume lots or log
    equipment use; never called when any provider refused."""

    reasons: list[Reason] = field(default_factory=list)
    signed: object = None
    apply: Callable[[Session, int], None] | None = None


# The names of the needs a step can declare; a provider of ``step_requirements`` is
# registered under the need it checks, so a need nobody checks is refused at the step
# (``requirement_unchecked``) instead of passing unseen.
STEP_NEED_KINDS = ("materials", "equipment", "qualification", "room_grade")


def declared_needs(needs: StepNeeds) -> list[str]:
    """The kinds of need a step declares (names of ``STEP_NEED_KINDS``)."""
    return [kind for kind in STEP_NEED_KINDS if getattr(needs, kind)]


step_requirements: Seam[Callable[[Session, StepContext], StepCheck]] = Seam(
    "step_requirements", "Checks of what a step needs (material lots, equipment, "
    "qualifications, rooms) and what recording it does to them: batches asks every "
    "provider before a step is signed and by the dry run (POST .../check).")


# --- what a scan found that is not an item --------------------------------------------------


@dataclass(frozen=True)
class ScannedSubject:
    """A scanned label of something that is not a patient's item (a material lot, a piece
    of equipment): what the scan station shows."""

    kind: str  # "lot", "equipment"
    subject_id: str
    title: str  # e.g. "IL-2 (Proleukin) lot LOT-000012"
    status: str
    expires_at: datetime | None
    reasons: list[Reason]  # empty: fit for use now
    url: str | None = None  # its page

    @property
    def ok(self) -> bool:
        return not self.reasons


scanned_subjects: Seam[Callable[[Session, str, str], ScannedSubject | None]] = Seam(
    "scanned_subjects", "What a verified label of a kind that is no item names (kind code "
    "such as LOT or EQP, subject id): the scan station shows it (materials and equipment "
    "answer; None when the kind is not theirs).")


# --- why an item may not be given or used now (SPEC §14) -----------------------------------

item_holds: Seam[Callable[[Session, str], list[Reason]]] = Seam(
    "item_holds", "Why an item (item id) may not be given or used now although its status "
    "allows it: a hold another domain keeps on it until a decision (logistics answers "
    "`temperature_excursion` / `temperature_unknown` for the items of a shipment waiting "
    "for QA's disposition). The bedside check refuses with these reasons and the scan "
    "station shows them.")


# --- storage positions (SPEC §14) ------------------------------------------------------------


class StoragePositions(Protocol):
    """Where an item sits in storage (``<SITE/FREEZER/RACK/BOX>:<position>``): identity's
    custody ``move`` and ``receive`` place it, every custody action that takes it away
    frees it (logistics answers; one item per position)."""

    def place(self, session: Session, item_id: str, position: str, *, site_code: str) -> str:
        """Put the item at ``position`` (at ``site_code``, where the item is or arrives),
        freeing where it was; the canonical position text. 409 ``position_occupied`` when
        another item is there, 422 for a position that does not exist."""
        ...

    def vacate(self, session: Session, item_id: str) -> str | None:
        """Free the item's position; the position it had, or None."""
        ...


storage_positions: Seam[StoragePositions] = Seam(
    "storage_positions", "Storage positions an item is placed in and taken out of by "
    "identity's custody actions (logistics answers; without it a `position` is refused).")


# --- the expansion forecast on the batch record (SPEC §15) ---------------------------------

if TYPE_CHECKING:  # here, not at the top: this section is the forecasts issue's own
    from gmp_mes.charts import Band, Line, Series


@dataclass(frozen=True)
class ForecastOverlay:
    """What the forecast adds to a batch's expansion chart (page and PDF): the prediction
    band, the median forecast, reference lines (the target) and small print (the model,
    the probability). batches draws it with ``gmp_mes.charts``; it never reads a status
    from it (forecasts advise people)."""

    bands: tuple[Band, ...] = ()
    series: tuple[Series, ...] = ()
    lines: tuple[Line, ...] = ()
    notes: tuple[str, ...] = ()


expansion_forecast: Seam[Callable[[Session, str], ForecastOverlay | None]] = Seam(
    "expansion_forecast", "The forecast drawn on a batch's expansion chart (batch number; "
    "the forecasts domain answers, None when the process declares no [forecast]).")


# --- after the infusion (SPEC §16) -----------------------------------------------------------


@dataclass(frozen=True)
class AdministrationFacts:
    """An infusion as identity recorded it: what the domains above need to follow it up."""

    item_id: str
    coi_id: str
    batch_number: str | None
    administered_at: datetime
    site_code: str


administered: Seam[Callable[[Session, AdministrationFacts], None]] = Seam(
    "administered", "Told of each administration in its own transaction, after identity "
    "recorded it (outcomes schedules the follow-up visits, SPEC §16).")

# A section of the patient page: ``section(session, viewer, coi_id) -> (title, html) | None``.
PatientSection = Callable[["Session", "Principal", str], "tuple[str, Markup] | None"]

patient_sections: Seam[PatientSection] = Seam(
    "patient_sections", "Sections other domains add to the patient page (identity draws "
    "them after its own; outcomes answers the follow-up visits).")


# --- the /reports index (SPEC §7b) --------------------------------------------------------


@dataclass(frozen=True)
class ReportEntry:
    endpoint: str
    title: str
    roles: tuple[str, ...] = ()  # who may open it (everyone when none)


def add_report(app: Flask, endpoint: str, title: str, roles: tuple[str, ...] = ()) -> None:
    """A report on the /reports index (vein-to-vein, outcomes, control charts, ...): any
    domain registers it in its ``init_app``; outcomes draws the index."""
    reports(app).append(ReportEntry(endpoint, title, roles))


def reports(app: Flask) -> list[ReportEntry]:
    found: list[ReportEntry] = app.extensions.setdefault("gmp_mes.reports", [])
    return found


# --- room bookings (SPEC §13) ---------------------------------------------------------------


@dataclass(frozen=True)
class StartedBatch:
    """A batch as batches started it: what a booking for its patient links to."""

    batch_number: str
    coi_id: str
    process_code: str
    process_version: int
    started_at: datetime


batch_started: Seam[Callable[[Session, StartedBatch], None]] = Seam(
    "batch_started", "Told of each batch start in its own transaction, after batches "
    "recorded it (schedule links the patient's booking to the batch, SPEC §13).")
