"""The README and docs/ are self-contained: every relative link resolves inside the repository, nothing cites the
design notes that live outside it, the method page covers every equation the code cites, and the command table lists
every make target a user runs."""

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_relative_links_resolve_inside_the_repository(document):
    broken = []
    for target in LINK.findall(document.read_text()):
        if re.match(r"[a-z]+://", target) or target.startswith("#"):
            continue
        path = (document.parent / target.split("#", 1)[0]).resolve()
        if not path.exists() or REPO_ROOT not in path.parents:
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_no_document_cites_the_design_notes_outside_the_repository(document):
    assert "shared/design" not in document.read_text() and "hbi-spec.md" not in document.read_text()


def test_method_page_gives_every_equation_and_section_the_code_cites():
    method = (REPO_ROOT / "docs" / "method.md").read_text()
    cited = set()
    for path in (REPO_ROOT / "src").rglob("*.py"):
        cited |= {int(number) for number in re.findall(r"\bEqs?\. (\d+)", path.read_text())}
    equations = {
        int(number)
        for first, last in re.findall(r"Eqs?\. (\d+)(?:-(\d+))?", method)
        for number in range(int(first), int(last or first) + 1)
    }
    assert cited and cited <= equations
    sections = {
        int(number)
        for path in (REPO_ROOT / "src").rglob("*.py")
        for number in re.findall(r"spec §(\d+)", path.read_text())
    }
    headings = {int(number) for number in re.findall(r"^## (\d+)\. ", method, flags=re.MULTILINE)}
    assert sections and sections <= headings


def test_readme_command_table_lists_the_make_targets_and_the_quick_demo():
    makefile = (REPO_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.MULTILINE)) - {"venv", "clean", "lint"}
    readme = (REPO_ROOT / "README.md").read_text()
    assert {target for target in targets if f"make {target}`" not in readme} == set()
    assert "scripts/demo.py --quick" in readme
