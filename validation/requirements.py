"""The requirements catalogue (``config/requirements.toml``) and the clauses tests name.

EU GMP Annex 11 §4 / 21 CFR 11.10(a): user requirements are traceable to the tests that
show them. Tests name a clause with ``@pytest.mark.requirement("21 CFR 11.10(e)")``; this
module reads the catalogue, normalises the spelling of a marker and resolves it to
catalogue clauses, and finds every marker in a test tree without running it (by reading
the source), so a misspelt or unknown clause fails a test instead of vanishing from the
matrix.
"""

from __future__ import annotations

import ast
import re
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path

CATALOGUE = Path(__file__).resolve().parent.parent / "config" / "requirements.toml"


@dataclass(frozen=True)
class Clause:
    id: str
    title: str
    text: str

    @property
    def document(self) -> str:
        for prefix in ("21 CFR", "EU GMP Annex 11", "EU GMP Part IV", "EU GMP", "SPEC"):
            if self.id.startswith(prefix):
                return {"21 CFR": "21 CFR Part 11", "SPEC": "gmp-mes SPEC"}.get(prefix, prefix)
        return "Standards and product rules"


@dataclass(frozen=True)
class Catalogue:
    clauses: tuple[Clause, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for clause in self.clauses:
            if clause.id in seen:
                raise ValueError(f"requirements catalogue: clause {clause.id!r} listed twice")
            seen.add(clause.id)

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(c.id for c in self.clauses)

    def get(self, clause_id: str) -> Clause | None:
        return next((c for c in self.clauses if c.id == clause_id), None)

    def parent(self, clause_id: str) -> str | None:
        """The nearest listed clause that ``clause_id`` is a sub-clause of, or None."""
        parents = [other for other in self.ids if is_subclause(clause_id, other)]
        return max(parents, key=len, default=None)

    def roots(self) -> list[Clause]:
        """Clauses that are no sub-clause of another listed clause, in catalogue order."""
        return [c for c in self.clauses if self.parent(c.id) is None]

    def children(self, clause_id: str) -> list[Clause]:
        return [c for c in self.clauses if self.parent(c.id) == clause_id]

    def resolve(self, marker: str) -> list[str]:
        """The catalogue clauses a marker names; raises UnknownClause if any is not listed."""
        resolved = []
        for part in split_marker(normalise(marker)):
            clause = self._match(part)
            if clause is None:
                raise UnknownClause(marker)
            resolved.append(clause)
        return resolved

    def _match(self, text: str) -> str | None:
        if text in self.ids:
            return text
        # "SPEC §3 step order", "EU GMP Annex 1 / ATMP guidelines: shelf life": the longest
        # listed clause followed by a note (after a space or a colon). A sub-clause glued to
        # a listed clause ("21 CFR 11.10(z)", "§12.9") is not a note: it must be listed.
        noted = [c for c in self.ids if text.startswith(c) and text[len(c)] in " :;"]
        return max(noted, key=len, default=None)


class UnknownClause(ValueError):
    def __init__(self, marker: str) -> None:
        super().__init__(f"requirement {marker!r} is not in the requirements catalogue")
        self.marker = marker


def is_subclause(child: str, parent: str) -> bool:
    """``21 CFR 11.200(a)(1)`` is under ``21 CFR 11.200(a)``, ``§12.4`` under ``§12``."""
    return child.startswith(parent) and len(child) > len(parent) and child[len(parent)] in "(."


def load_catalogue(path: Path = CATALOGUE) -> Catalogue:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"requirements catalogue {path}: {exc}") from exc
    clauses = []
    for entry in data.get("clause", []):
        missing = {"id", "title", "text"} - set(entry)
        if missing:
            raise ValueError(f"requirements catalogue: {entry.get('id', '?')} lacks {missing}")
        clause_id = normalise(entry["id"])
        if clause_id != entry["id"]:
            raise ValueError(f"requirements catalogue: write {entry['id']!r} as {clause_id!r}")
        clauses.append(Clause(clause_id, entry["title"], entry["text"]))
    return Catalogue(tuple(clauses))


_ALIASES = (
    # The spelling the catalogue uses, whatever a test wrote.
    (re.compile(r"^(?:EU\s+)?(?:GMP\s+)?Annex\s*11\b"), "EU GMP Annex 11"),
    (re.compile(r"^(?:21\s*CFR\s*)?Part\s*11\s*[,.]?\s*(?:§\s*)?(?=11\.)"), "21 CFR "),
    (re.compile(r"^21\s*CFR\s*(?:Part\s*11\s*)?(?:§\s*)?(?=11\.)"), "21 CFR "),
    (re.compile(r"^(?:EU\s+)?GMP\s+Part\s+IV\b"), "EU GMP Part IV"),
    (re.compile(r"^Spec\b", re.IGNORECASE), "SPEC"),
)


def normalise(marker: str) -> str:
    """One spelling per clause: NFKC, single spaces, "Sec."/"Section" as "§", no space
    after "§", "Annex 11 §9" as "EU GMP Annex 11 §9", "Part 11 §11.10(e)" as
    "21 CFR 11.10(e)", lower-case sub-clause letters."""
    text = unicodedata.normalize("NFKC", marker)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\b(?:Sec\.|Section|sect\.)\s*", "§", text)
    text = re.sub(r"§\s+", "§", text)
    for pattern, replacement in _ALIASES:
        text = pattern.sub(replacement, text, count=1)
    # "11.10 (E)" is the sub-clause "11.10(e)"; "SPEC §5 (one transaction)" keeps its note.
    text = re.sub(r"(?<=\d) +(?=\([A-Za-z0-9]{1,4}\))", "", text)
    text = re.sub(r"(?<=[\d)])\(([A-Za-z]{1,4})\)", lambda m: f"({m[1].lower()})", text)
    return text


def split_marker(text: str) -> list[str]:
    """``SPEC §5, §6, §7`` names three clauses of one document."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 1 and all(p.startswith("§") for p in parts[1:]) and "§" in parts[0]:
        document = parts[0][: parts[0].index("§")]
        return [parts[0], *(document + p for p in parts[1:])]
    return [text]


@dataclass(frozen=True)
class MarkerUse:
    path: Path
    line: int
    test: str
    marker: str


def markers_in(tests_dir: Path) -> list[MarkerUse]:
    """Every ``requirement(...)`` marker in the Python files under ``tests_dir``: on a
    function, a class, ``pytestmark`` or ``pytest.param(marks=...)``, found in the source."""
    found = []
    for path in sorted(tests_dir.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        owners = _owners(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and _is_requirement(node.func)):
                continue
            owner = owners.get(id(node), "<module>")
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.append(MarkerUse(path, node.lineno, owner, arg.value))
                else:
                    found.append(MarkerUse(path, node.lineno, owner, ast.unparse(arg)))
    return found


def _is_requirement(func: ast.expr) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "requirement"
            and isinstance(func.value, ast.Attribute) and func.value.attr == "mark")


def _owners(tree: ast.Module) -> dict[int, str]:
    owners: dict[int, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for child in ast.walk(node):
                owners[id(child)] = node.name  # walk is outer first: the innermost wins
    return owners
