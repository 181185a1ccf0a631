"""CRS and ICANS grades (ASTCT 2019 consensus, Lee et al. 2019, Tables 4 and 5): every row
of both tables, fever required for CRS, and the worst element deciding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outcomes.grading import (
    CerebralEdema,
    Consciousness,
    CrsElements,
    Hypotension,
    Hypoxia,
    IcansElements,
    Motor,
    Seizure,
    crs_grade,
    crs_hypotension_grade,
    crs_hypoxia_grade,
    icans_consciousness_grade,
    icans_edema_grade,
    icans_grade,
    icans_ice_grade,
    icans_motor_grade,
    icans_seizure_grade,
)

pytestmark = pytest.mark.requirement("SPEC §16")

# Table 4 (CRS), one row per grade and parameter: (fever, hypotension, hypoxia, grade).
CRS_TABLE = [
    (True, Hypotension.NONE, Hypoxia.NONE, 1),  # grade 1: fever alone
    (True, Hypotension.NO_VASOPRESSOR, Hypoxia.NONE, 2),
    (True, Hypotension.NONE, Hypoxia.LOW_FLOW, 2),
    (True, Hypotension.ONE_VASOPRESSOR, Hypoxia.NONE, 3),
    (True, Hypotension.NONE, Hypoxia.HIGH_FLOW, 3),
    (True, Hypotension.MULTIPLE_VASOPRESSORS, Hypoxia.NONE, 4),
    (True, Hypotension.NONE, Hypoxia.POSITIVE_PRESSURE, 4),
    # "and/or": the more severe of the two decides
    (True, Hypotension.NO_VASOPRESSOR, Hypoxia.HIGH_FLOW, 3),
    (True, Hypotension.MULTIPLE_VASOPRESSORS, Hypoxia.LOW_FLOW, 4),
    (True, Hypotension.ONE_VASOPRESSOR, Hypoxia.LOW_FLOW, 3),
    # no fever, no CRS: hypotension or hypoxia alone has another cause
    (False, Hypotension.NONE, Hypoxia.NONE, 0),
    (False, Hypotension.MULTIPLE_VASOPRESSORS, Hypoxia.POSITIVE_PRESSURE, 0),
]


@pytest.mark.parametrize(("fever", "hypotension", "hypoxia", "grade"), CRS_TABLE)
def test_crs_table(fever: bool, hypotension: Hypotension, hypoxia: Hypoxia,
                   grade: int) -> None:
    assert crs_grade(CrsElements(fever, hypotension, hypoxia)) == grade


def test_after_tocilizumab_or_antipyretics_fever_is_not_needed() -> None:
    masked = CrsElements(False, Hypotension.ONE_VASOPRESSOR, Hypoxia.LOW_FLOW,
                         fever_masked_by_treatment=True)
    assert crs_grade(masked) == 3
    assert crs_grade(CrsElements(False, fever_masked_by_treatment=True)) == 0


# Table 5 (ICANS, adults): every row.
ICE = [(10, 0), (9, 1), (7, 1), (6, 2), (3, 2), (2, 3), (0, 3)]
CONSCIOUSNESS = [(Consciousness.ALERT, 0), (Consciousness.AWAKENS_SPONTANEOUSLY, 1),
                 (Consciousness.AWAKENS_TO_VOICE, 2), (Consciousness.AWAKENS_TO_TOUCH, 3),
                 (Consciousness.UNAROUSABLE, 4)]
SEIZURE = [(Seizure.NONE, 0), (Seizure.RESOLVING, 3), (Seizure.PROLONGED, 4)]
MOTOR = [(Motor.NONE, 0), (Motor.DEEP_FOCAL_WEAKNESS, 4)]
EDEMA = [(CerebralEdema.NONE, 0), (CerebralEdema.FOCAL, 3), (CerebralEdema.DIFFUSE, 4)]


@pytest.mark.parametrize(("score", "grade"), ICE)
def test_icans_ice_score_rows(score: int, grade: int) -> None:
    assert icans_ice_grade(score) == grade
    assert icans_grade(IcansElements(score)) == grade


@pytest.mark.parametrize(("level", "grade"), CONSCIOUSNESS)
def test_icans_consciousness_rows(level: Consciousness, grade: int) -> None:
    assert icans_grade(IcansElements(10, consciousness=level)) == grade


@pytest.mark.parametrize(("seizure", "grade"), SEIZURE)
def test_icans_seizure_rows(seizure: Seizure, grade: int) -> None:
    assert icans_grade(IcansElements(10, seizure=seizure)) == grade


@pytest.mark.parametrize(("motor", "grade"), MOTOR)
def test_icans_motor_rows(motor: Motor, grade: int) -> None:
    assert icans_grade(IcansElements(10, motor=motor)) == grade


@pytest.mark.parametrize(("edema", "grade"), EDEMA)
def test_icans_cerebral_edema_rows(edema: CerebralEdema, grade: int) -> None:
    assert icans_grade(IcansElements(10, cerebral_edema=edema)) == grade


def test_an_ice_score_of_zero_is_grade_4_only_when_unarousable() -> None:
    assert icans_grade(IcansElements(0, consciousness=Consciousness.AWAKENS_TO_VOICE)) == 3
    assert icans_grade(IcansElements(0, consciousness=Consciousness.UNAROUSABLE)) == 4


@pytest.mark.parametrize("score", [-1, 11])
def test_an_ice_score_outside_0_to_10_is_refused(score: int) -> None:
    with pytest.raises(ValueError, match="0 to 10"):
        icans_ice_grade(score)


@given(st.booleans(), st.sampled_from(Hypotension), st.sampled_from(Hypoxia))
def test_crs_the_worst_element_decides(fever: bool, hypotension: Hypotension,
                                       hypoxia: Hypoxia) -> None:
    worst = max(crs_hypotension_grade(hypotension), crs_hypoxia_grade(hypoxia))
    expected = max(1, worst) if fever else 0
    assert crs_grade(CrsElements(fever, hypotension, hypoxia)) == expected


@given(st.integers(0, 10), st.sampled_from(Consciousness), st.sampled_from(Seizure),
       st.sampled_from(Motor), st.sampled_from(CerebralEdema))
def test_icans_the_worst_element_decides(score: int, level: Consciousness,
                                         seizure: Seizure, motor: Motor,
                                         edema: CerebralEdema) -> None:
    elements = IcansElements(score, level, seizure, motor, edema)
    assert icans_grade(elements) == max(
        icans_ice_grade(score), icans_consciousness_grade(level), icans_seizure_grade(seizure),
        icans_motor_grade(motor), icans_edema_grade(edema))
