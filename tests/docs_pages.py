"""The documentation the tests read: README.md and the pages under docs/, in one place. Tests of
examples take their blocks from here, so a block moved between pages is still run, and a section looked
up by its heading is found on whichever page holds it. Locations name the page ("docs/cli.md:12")."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```(\w*)\s*$")
HEADING = re.compile(r"^(#{1,6}) (.+?)\s*$")


class Location(str):
    """Where a block starts: "<page>:<line of the opening fence>", usable as a compile() filename."""


def pages() -> list[Path]:
    """README.md first, then every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def texts() -> list[tuple[str, str]]:
    """(page name, text) of every page."""
    return [(name(page), page.read_text()) for page in pages()]


def all_text() -> str:
    """Every page's text, for checks that a sentence or table row is documented somewhere."""
    return "\n\n".join(text for _, text in texts())


def all_blocks() -> list[tuple[str, Location, str]]:
    """(language, location of the opening fence, code) of every fenced block of every page."""
    found: list[tuple[str, Location, str]] = []
    for page, text in texts():
        opened: tuple[str, int] | None = None
        lines: list[str] = []
        for number, line in enumerate(text.splitlines(), 1):
            fence = FENCE.match(line)
            if fence and opened is None:
                opened, lines = (fence.group(1), number), []
            elif line.strip() == "```" and opened is not None:
                found.append((opened[0], Location(f"{page}:{opened[1]}"), "\n".join(lines) + "\n"))
                opened = None
            elif opened is not None:
                lines.append(line)
        assert opened is None, f"{page}:{opened[1]}: block never closed"
    return found


def headings(text: str) -> list[tuple[int, int, str]]:
    """(line index, level, title) of the headings of a page, outside fenced blocks."""
    found, fenced = [], False
    for index, line in enumerate(text.splitlines()):
        if line.startswith("```"):
            fenced = not fenced
            continue
        heading = HEADING.match(line)
        if heading and not fenced:
            found.append((index, len(heading.group(1)), heading.group(2)))
    return found


def section(title: str) -> tuple[str, str]:
    """(page name, text) of the one section whose heading is ``title``, at any level, on any page:
    from its heading to the next heading of the same or a higher level."""
    hits = []
    for page, text in texts():
        lines = text.splitlines()
        marks = headings(text)
        for i, (index, level, found) in enumerate(marks):
            if found == title:
                end = next((at for at, other, _ in marks[i + 1 :] if other <= level), len(lines))
                hits.append((page, "\n".join(lines[index + 1 : end]) + "\n"))
    assert len(hits) == 1, f"section {title!r}: found {len(hits)} times in README.md and docs/"
    return hits[0]


def location_id(value: object) -> str | None:
    """A pytest id for parametrized (location, code) pairs: the location, nothing for the code."""
    return str(value) if isinstance(value, Location) else ""


def slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors GitHub makes for a page's headings (a repeated one gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, _, title in headings(text):
        base = slug(title)
        count = seen.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return found
