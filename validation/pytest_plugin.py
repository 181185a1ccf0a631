"""pytest plugin: each test's requirement markers go into the JUnit XML.

``make validation`` runs the suite with ``--junitxml``; ``gmp-mes validate report``
then reads the clauses from the ``<property name="requirement">`` elements of each
``<testcase>``, so the traceability matrix is built from the very run it reports,
without collecting the tests again (tests/conftest.py loads this plugin).
"""

from __future__ import annotations

import pytest

PROPERTY = "requirement"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "requirement(clause): the regulatory clause this test demonstrates"
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for mark in item.iter_markers(PROPERTY):
            item.user_properties.extend((PROPERTY, str(arg)) for arg in mark.args)
