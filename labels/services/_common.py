"""Helpers shared by the label service modules (not re-exported): the label subjects
seam and identifiers as typed."""

from __future__ import annotations

from gmp_mes import registry
from gmp_mes.registry import LabelSubjects, RegistryError


def subjects() -> LabelSubjects:
    """The one provider of what labels print (identity registers it in its init_app);
    labels never imports identity."""
    found = registry.label_subjects.providers()
    if len(found) != 1:
        raise RegistryError(
            f"labels needs exactly one provider of label subjects "
            f"(gmp_mes.registry.label_subjects), found {len(found)}: is the identity "
            "domain installed and its init_app run?")
    return found[0]


def canonical(identifier: str) -> str:
    return (identifier or "").strip().upper()
