"""CRS and ICANS grades computed from their elements, never typed (SPEC §16).

The source is the ASTCT consensus grading of cytokine release syndrome and neurologic
toxicity associated with immune effector cells: Lee DW et al., Biol Blood Marrow
Transplant 2019;25:625-638 (Table 4: CRS; Table 5: ICANS in adults; Table 2: the ICE
score). Each element is graded by one function below, quoting the row of the table it
implements; the syndrome's grade is the worst element's grade ("determined by the more
severe event", footnotes of both tables). Grade 5 (death due to the syndrome) is not
computed from elements: a death is recorded as such, with its cause.

What is not graded here, as the consensus says: symptoms attributable to another cause
(the clinician records only elements attributed to CRS or ICANS), and ICANS in children
under 12 (the CAPD replaces the ICE score; not an element of SPEC §16).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Hypotension(enum.StrEnum):
    NONE = "none"
    NO_VASOPRESSOR = "no_vasopressor"
    ONE_VASOPRESSOR = "one_vasopressor"  # with or without vasopressin
    MULTIPLE_VASOPRESSORS = "multiple_vasopressors"  # excluding vasopressin


class Hypoxia(enum.StrEnum):
    NONE = "none"
    LOW_FLOW = "low_flow"  # nasal cannula <= 6 L/min, or blow-by
    HIGH_FLOW = "high_flow"  # nasal cannula > 6 L/min, facemask, non-rebreather, Venturi
    POSITIVE_PRESSURE = "positive_pressure"  # CPAP, BiPAP, intubation and ventilation


class Consciousness(enum.StrEnum):
    ALERT = "alert"
    AWAKENS_SPONTANEOUSLY = "awakens_spontaneously"
    AWAKENS_TO_VOICE = "awakens_to_voice"
    AWAKENS_TO_TOUCH = "awakens_to_touch"  # only to tactile stimulus
    UNAROUSABLE = "unarousable"  # or needs vigorous/repetitive stimuli; stupor; coma


class Seizure(enum.StrEnum):
    NONE = "none"
    RESOLVING = "resolving"  # any clinical seizure that resolves rapidly, or EEG-only
    PROLONGED = "prolonged"  # > 5 min, or repetitive without return to baseline


class Motor(enum.StrEnum):
    NONE = "none"
    DEEP_FOCAL_WEAKNESS = "deep_focal_weakness"  # e.g. hemiparesis, paraparesis


class CerebralEdema(enum.StrEnum):
    NONE = "none"
    FOCAL = "focal"  # focal/local oedema on neuroimaging
    DIFFUSE = "diffuse"  # diffuse oedema, posturing, CN VI palsy, papilloedema, Cushing


@dataclass(frozen=True)
class CrsElements:
    fever: bool  # temperature >= 38 °C not attributable to another cause
    hypotension: Hypotension = Hypotension.NONE
    hypoxia: Hypoxia = Hypoxia.NONE
    # Table 4, footnote: once antipyretics or anti-cytokine therapy (tocilizumab,
    # steroids) were given, fever is no longer needed to grade later CRS (an extension
    # of SPEC §16's elements; default: fever is needed).
    fever_masked_by_treatment: bool = False


@dataclass(frozen=True)
class IcansElements:
    ice_score: int  # 0-10 (Table 2)
    consciousness: Consciousness = Consciousness.ALERT
    seizure: Seizure = Seizure.NONE
    motor: Motor = Motor.NONE
    cerebral_edema: CerebralEdema = CerebralEdema.NONE


# --- CRS (Table 4) ----------------------------------------------------------------------

def crs_hypotension_grade(hypotension: Hypotension) -> int:
    """Table 4, row "with hypotension": not requiring vasopressors 2; requiring a
    vasopressor with or without vasopressin 3; requiring multiple vasopressors
    (excluding vasopressin) 4."""
    return {Hypotension.NONE: 0, Hypotension.NO_VASOPRESSOR: 2,
            Hypotension.ONE_VASOPRESSOR: 3, Hypotension.MULTIPLE_VASOPRESSORS: 4}[hypotension]


def crs_hypoxia_grade(hypoxia: Hypoxia) -> int:
    """Table 4, row "and/or hypoxia": low-flow nasal cannula or blow-by 2; high-flow
    nasal cannula, facemask, non-rebreather or Venturi mask 3; positive pressure (CPAP,
    BiPAP, intubation and mechanical ventilation) 4."""
    return {Hypoxia.NONE: 0, Hypoxia.LOW_FLOW: 2, Hypoxia.HIGH_FLOW: 3,
            Hypoxia.POSITIVE_PRESSURE: 4}[hypoxia]


def crs_grade(elements: CrsElements) -> int:
    """0 (no CRS) to 4. Table 4: fever (>= 38 °C) is required at every grade, unless
    antipyretic or anti-cytokine treatment masks it; fever alone is grade 1; otherwise the
    more severe of hypotension and hypoxia decides."""
    fever = elements.fever or elements.fever_masked_by_treatment
    if not fever:
        return 0
    worst = max(crs_hypotension_grade(elements.hypotension),
                crs_hypoxia_grade(elements.hypoxia))
    if worst == 0:
        return 1 if elements.fever else 0  # masked fever with no other sign: no CRS
    return worst


# --- ICANS (Table 5, adults; ICE score Table 2) ----------------------------------------------

def icans_ice_grade(ice_score: int) -> int:
    """Table 5, row "ICE score": 7-9 grade 1; 3-6 grade 2; 0-2 grade 3; 10 no
    impairment. A score of 0 is grade 3 for an awake patient with global aphasia and
    grade 4 for one who is unarousable: that grade 4 comes from the consciousness row."""
    if not 0 <= ice_score <= 10:
        raise ValueError("the ICE score is 0 to 10")
    if ice_score == 10:
        return 0
    if ice_score >= 7:
        return 1
    if ice_score >= 3:
        return 2
    return 3


def icans_consciousness_grade(consciousness: Consciousness) -> int:
    """Table 5, row "depressed level of consciousness": awakens spontaneously 1; awakens
    to voice 2; awakens only to tactile stimulus 3; unarousable or needs vigorous or
    repetitive tactile stimuli, stupor or coma 4."""
    return {Consciousness.ALERT: 0, Consciousness.AWAKENS_SPONTANEOUSLY: 1,
            Consciousness.AWAKENS_TO_VOICE: 2, Consciousness.AWAKENS_TO_TOUCH: 3,
            Consciousness.UNAROUSABLE: 4}[consciousness]


def icans_seizure_grade(seizure: Seizure) -> int:
    """Table 5, row "seizure": any clinical seizure, focal or generalised, that resolves
    rapidly, or non-convulsive seizures on EEG that resolve with intervention 3;
    life-threatening prolonged seizure (> 5 min) or repetitive seizures without return
    to baseline in between 4."""
    return {Seizure.NONE: 0, Seizure.RESOLVING: 3, Seizure.PROLONGED: 4}[seizure]


def icans_motor_grade(motor: Motor) -> int:
    """Table 5, row "motor findings": deep focal motor weakness such as hemiparesis or
    paraparesis 4."""
    return {Motor.NONE: 0, Motor.DEEP_FOCAL_WEAKNESS: 4}[motor]


def icans_edema_grade(edema: CerebralEdema) -> int:
    """Table 5, row "elevated ICP/cerebral edema": focal/local oedema on neuroimaging 3;
    diffuse cerebral oedema, decerebrate or decorticate posturing, cranial nerve VI palsy,
    papilloedema or Cushing's triad 4."""
    return {CerebralEdema.NONE: 0, CerebralEdema.FOCAL: 3, CerebralEdema.DIFFUSE: 4}[edema]


def icans_grade(elements: IcansElements) -> int:
    """0 (no ICANS) to 4: the most severe element decides (Table 5, footnote)."""
    return max(icans_ice_grade(elements.ice_score),
               icans_consciousness_grade(elements.consciousness),
               icans_seizure_grade(elements.seizure),
               icans_motor_grade(elements.motor),
               icans_edema_grade(elements.cerebral_edema))
