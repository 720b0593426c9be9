"""The documents agree with the code: the option table matches `trioshop run --help`, and every
link stays inside the repository and reaches a file (and heading) that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import run_trioshop

ROOT = Path(__file__).parents[1]
# Every Markdown document of the repository a reader is sent to (the package's own are none).
DOCUMENTS = sorted(
    [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("bench/**/*.md"),
     *ROOT.glob("deploy/**/*.md")]
)
# The document whose table lists `trioshop run`'s options, and the heading of its section.
OPTIONS_DOCUMENT = ROOT / "docs" / "operations.md"
OPTIONS_SECTION = "## The command line"

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_UP = re.compile(r"(?:\.\./)+[\w./-]*")
_HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.MULTILINE)
_CODE_BLOCK = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _prose(document: Path) -> str:
    """The document without its fenced code blocks (shell comments there are no headings)."""
    return _CODE_BLOCK.sub("", document.read_text())


def _anchors(document: Path) -> set[str]:
    """The anchors GitHub makes of *document*'s headings: lower case, punctuation dropped,
    spaces as hyphens."""
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in _HEADING.findall(_prose(document))
    }


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("document", DOCUMENTS, ids=_name)
def test_relative_links_reach_files_of_the_repository(document: Path) -> None:
    """Every relative link resolves inside the repository to a file, and to a heading there."""
    broken = []
    for target in _LINK.findall(_prose(document)):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(f"{target}: no such file in the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading {anchor!r} in {_name(resolved)}")
    assert not broken, f"{_name(document)}: " + "; ".join(broken)


@pytest.mark.parametrize("document", DOCUMENTS, ids=_name)
def test_no_path_points_outside_the_repository(document: Path) -> None:
    """No `../` path, linked or quoted, climbs out of the repository."""
    outside = [
        path for path in _UP.findall(document.read_text())
        if not (document.parent / path).resolve().is_relative_to(ROOT)
    ]
    assert not outside, f"{_name(document)} points outside the repository: {outside}"


def _help_options(text: str) -> dict[str, str]:
    """Each ``--option`` of an argparse help text, with its help (wrapped lines joined)."""
    options: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        entry = re.match(r"^  (\S.*)$", line)
        if entry:
            head, _, help_text = re.sub(r"\s{2,}", "\0", entry.group(1), count=1).partition("\0")
            names = re.findall(r"(?:^|, )(--[a-z][\w-]*)", head)
            current = names[-1] if names and names[-1] != "--help" else None
            if current:
                options[current] = help_text
        elif current and line.startswith("    "):
            options[current] = f"{options[current]} {line.strip()}".strip()
        elif not line.strip():
            current = None
    return options


def _table_options(document: Path) -> dict[str, str]:
    """Each option row of *document*'s command-line section: the option and its default."""
    section = document.read_text().split(OPTIONS_SECTION, 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(--[a-z][\w-]*)[^`]*` \| ([^|]*) \|", section, re.MULTILINE)
    return {option: default.strip() for option, default in rows}


def _stated_default(help_text: str) -> str | None:
    match = re.search(r"default: ([^)]*)\)", help_text)
    return match.group(1).strip() if match else None


def _agrees(table: str, stated: str | None) -> bool:
    """Whether the table's default says what --help's does: the same number, the table's
    first quoted value named in the help, or no default on either side."""
    number = re.match(r"\d[\d_,]*(?:\.\d+)?", table)
    if number:
        found = re.match(r"\d[\d_,]*(?:\.\d+)?", stated or "")
        return found is not None and float(number.group().replace(",", "").replace("_", "")) \
            == float(found.group().replace(",", "").replace("_", ""))
    quoted = re.search(r"`([^`]+)`", table)
    if quoted:
        return stated is not None and quoted.group(1) in stated
    if table in ("none", "off"):
        return stated is None or stated.startswith("none")
    return True  # prose: nothing the help could be compared with


def test_option_table_matches_run_help() -> None:
    """docs/operations.md lists exactly the options of `trioshop run --help`, with its defaults."""
    result = run_trioshop("run", "--help")
    assert result.returncode == 0, result.stderr
    helped = _help_options(result.stdout)
    table = _table_options(OPTIONS_DOCUMENT)
    assert helped, f"no option found in `trioshop run --help`:\n{result.stdout}"
    assert sorted(helped) == sorted(table), (
        f"only in --help: {sorted(set(helped) - set(table))}; "
        f"only in {_name(OPTIONS_DOCUMENT)}: {sorted(set(table) - set(helped))}"
    )
    disagree = {
        option: (default, _stated_default(helped[option]))
        for option, default in table.items()
        if not _agrees(default, _stated_default(helped[option]))
    }
    assert not disagree, f"defaults of the table against --help: {disagree}"
