"""README.md and docs/: the front door stays short, every relative link (and #anchor) resolves,
and no topic is written twice (no heading, no paragraph in two places).

Run by deploy/scripts/docs-check.sh (in .ci/run and the workflow's lint job).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MANUAL = (
    "architecture",
    "operations",
    "observability",
    "reliability",
    "performance",
    "kubernetes",
    "ci",
)
#: Written on other branches at the same time (load balancing, backups): until they are merged a
#: link to them may dangle. Once they exist they are checked like every other file; this set
#: is emptied when they land.
PENDING: set[str] = set()

FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"`[^`]*`")
MIN_PARAGRAPH = 100  # characters: shorter lines ("Needs PostgreSQL.") may well repeat


@dataclass
class Page:
    path: Path
    headings: list[tuple[int, str]] = field(default_factory=list)
    links: list[tuple[int, str]] = field(default_factory=list)
    paragraphs: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.path.relative_to(ROOT))

    def anchors(self) -> set[str]:
        seen: dict[str, int] = {}
        anchors = set()
        for _, text in self.headings:
            base = slug(text)
            count = seen.get(base, 0)
            anchors.add(base if count == 0 else f"{base}-{count}")
            seen[base] = count + 1
        return anchors


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def parse(path: Path) -> Page:
    page = Page(path)
    in_code = False
    paragraph: list[str] = []

    def flush() -> None:
        text = " ".join(" ".join(paragraph).split())
        if len(text) >= MIN_PARAGRAPH and not text.startswith("|"):
            page.paragraphs.append(text)
        paragraph.clear()

    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line.strip()):
            in_code = not in_code
            flush()
            continue
        if in_code:
            continue
        if match := HEADING.match(line):
            flush()
            page.headings.append((len(match[1]), match[2]))
            continue
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            page.links.append((number, target))
        if line.strip():
            paragraph.append(line.strip())
        else:
            flush()
    flush()
    return page


PAGES = [parse(README), *(parse(p) for p in sorted(DOCS.glob("*.md")))]
BY_PATH = {page.path.resolve(): page for page in PAGES}


def test_readme_is_a_front_door_of_at_most_200_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    headings = [text for level, text in parse(README).headings if level == 2]
    assert headings == [
        "Two commands",
        "`docker compose up`",
        "The API",
        "Configuration",
        "Read more",
    ]


@pytest.mark.parametrize("name", MANUAL)
def test_the_manual_has_its_chapters_and_the_readme_links_each(name: str) -> None:
    assert (DOCS / f"{name}.md").is_file()
    assert (0, f"docs/{name}.md") in {(0, target) for _, target in parse(README).links}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_and_anchor_resolves(page: Page) -> None:
    broken = []
    for line, target in page.links:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (page.path.parent / file_part).resolve() if file_part else page.path.resolve()
        if not resolved.exists():
            if str(resolved.relative_to(ROOT)) not in PENDING:
                broken.append(f"{page.name}:{line}: {target} (no such file)")
            continue
        if anchor and resolved.suffix == ".md":
            target_page = BY_PATH.get(resolved) or parse(resolved)
            if anchor not in target_page.anchors():
                broken.append(f"{page.name}:{line}: {target} (no such heading)")
    assert broken == []


def test_no_heading_appears_twice() -> None:
    where: dict[str, list[str]] = {}
    for page in PAGES:
        for level, text in page.headings:
            if level > 1:
                where.setdefault(slug(text), []).append(page.name)
    assert {heading: pages for heading, pages in where.items() if len(pages) > 1} == {}


def test_no_paragraph_is_written_twice() -> None:
    where: dict[str, list[str]] = {}
    for page in PAGES:
        for paragraph in page.paragraphs:
            where.setdefault(paragraph, []).append(page.name)
    assert {text[:80]: pages for text, pages in where.items() if len(pages) > 1} == {}


@pytest.mark.parametrize(
    ("markers", "home"),
    [
        (("<!-- bench:start -->", "<!-- bench:end -->"), "docs/performance.md"),
        (("<!-- drills:start -->", "<!-- drills:end -->"), "docs/reliability.md"),
    ],
)
def test_generated_figures_have_one_home(markers: tuple[str, str], home: str) -> None:
    for page in PAGES:
        text = page.path.read_text(encoding="utf-8")
        expected = 1 if page.name == home else 0
        assert [text.count(marker) for marker in markers] == [expected, expected], page.name
    text = (ROOT / home).read_text(encoding="utf-8")
    start, end = (text.index(marker) for marker in markers)
    assert "|" in text[start:end]  # a table between them


def test_operations_links_to_load_balancing_and_backups() -> None:
    targets = {target for _, target in parse(DOCS / "operations.md").links}
    assert {"load-balancing.md", "backups.md"} <= targets


def test_the_checker_finds_a_broken_link_a_wrong_anchor_and_a_repeated_paragraph(
    tmp_path: Path,
) -> None:
    paragraph = "A paragraph long enough to count as a topic of its own, " * 3
    page = tmp_path / "page.md"
    page.write_text(
        f"# T\n\n## Real heading\n\n[a](missing.md) [b](#real-heading) [c](#no-such)\n\n"
        f"{paragraph}\n\n```\n## not a heading\n```\n\n{paragraph}\n"
    )
    parsed = parse(page)
    assert parsed.headings == [(1, "T"), (2, "Real heading")]
    assert [target for _, target in parsed.links] == ["missing.md", "#real-heading", "#no-such"]
    assert parsed.anchors() == {"t", "real-heading"}
    assert len(parsed.paragraphs) == 2
    assert parsed.paragraphs[0] == parsed.paragraphs[1]
    assert slug("`docker compose up`") == "docker-compose-up"
    assert slug("Where we differ (it answers 500)") == "where-we-differ-it-answers-500"
