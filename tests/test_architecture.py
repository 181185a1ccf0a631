"""The import graph (issue 16): domains layered by the contract in pyproject.toml (every
import, types-only ones too), no runtime import cycle among the modules of the core and
the domains (an ``if TYPE_CHECKING:`` import names a type and runs nothing)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "gmp_mes", "labels", "processes", "identity", "materials", "equipment", "logistics",
    "batches", "qc", "training", "rooms", "forecasts", "schedule", "outcomes", "validation", "demo",
)
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")



def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=300,
    )


def _broken(output: str) -> set[tuple[str, str]]:
    return set(re.findall(r"^- (\S+) -> (\S+) \(", output, re.MULTILINE))


def test_the_layer_contract_is_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken" in result.stdout, result.stdout
    assert _broken(result.stdout) == set(), result.stdout


def test_a_planted_upward_import_breaks_the_contract(tmp_path):
    for package in (*PACKAGES, "bench"):
        if (ROOT / package).is_dir():
            shutil.copytree(ROOT / package, tmp_path / package,
                            ignore=shutil.ignore_patterns("__pycache__", "static", "templates"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "labels" / "payload.py").open("a") as payload:
        payload.write("\nimport qc.services  # planted\n")

    result = _lint(tmp_path)

    assert result.returncode != 0
    assert "labels is not allowed to import qc" in result.stdout, result.stdout
    assert ("labels.payload", "qc.services") in _broken(result.stdout)


def _cycles(graph: grimp.ImportGraph) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = edges.get(node, [])
            if i < len(targets):
                work.append((node, i + 1))
                target = targets[i]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def test_tarjan_finds_a_loop():
    graph = grimp.ImportGraph()
    for a, b in (("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e")):
        graph.add_import(importer=a, imported=b)
    assert _cycles(graph) == [{"a", "b", "c"}]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    """What runs: imports under ``if TYPE_CHECKING:`` are left out."""
    return grimp.build_graph(*PACKAGES, cache_dir=None, exclude_type_checking_imports=True)


def test_the_runtime_graph_leaves_out_type_only_imports(graph):
    # registry names accounts.Principal for its seams' types only (accounts -> audit ->
    # registry at run time); the contract above still sees the type-only edge.
    assert not graph.direct_import_exists(importer="gmp_mes.registry",
                                          imported="gmp_mes.accounts")
    full = grimp.build_graph("gmp_mes", cache_dir=None)
    assert full.direct_import_exists(importer="gmp_mes.registry", imported="gmp_mes.accounts")


def test_no_import_cycle_in_the_core(graph):
    assert [c for c in _cycles(graph) if any(m.startswith("gmp_mes") for m in c)] == []


def test_no_import_cycle_among_the_domains(graph):
    assert _cycles(graph) == []
