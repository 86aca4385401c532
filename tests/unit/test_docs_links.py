"""README.md and docs/*.md: every relative link, image and #anchor resolves; the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

from fanout.azurite import PROJECT_ROOT

README_MAX_LINES = 200

FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")  # a code span, closed by as many backticks as opened it
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    return [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a `# comment` in a bash block is no heading, a `[x](y)` no link)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_anchor(heading: str) -> str:
    """GitHub's rule: lowercase, punctuation but `-` and `_` removed (backticks too), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading counts by its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(path.read_text()):
        heading = HEADING.match(line)
        if not heading:
            continue
        anchor = github_anchor(heading.group(2))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")  # GitHub numbers repeated headings
    return found


def links(path: Path) -> list[str]:
    return [
        target
        for line in prose_lines(path.read_text())
        for target in LINK.findall(INLINE_CODE.sub("", line))
        if not re.match(r"(?i)(https?:|mailto:)", target)
    ]


def broken_links(files: list[Path]) -> list[str]:
    broken = []
    for path in files:
        for target in links(path):
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.name}: ({target})"
            if not linked.exists():
                broken.append(f"{where}: no file {linked}")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{where}: no heading #{anchor} in {linked.name}")
    return broken


def test_every_relative_link_image_and_anchor_resolves():
    files = markdown_files()
    assert len(files) > 5, files  # the README and the docs it links to
    assert sum(len(links(path)) for path in files) > 50  # the links are found at all
    assert broken_links(files) == []


def test_the_readme_stays_short():
    lines = (PROJECT_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move detail to docs/"


def test_the_readme_starts_with_make_demo_and_make_test():
    readme = (PROJECT_ROOT / "README.md").read_text()
    first_block = readme.split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line.strip()]
    assert commands[:2] == ["make demo", "make test"]


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## The `send` pace, again!\n")
    (tmp_path / "page.md").write_text(
        "# Page\n\n"
        "[fine](other.md#the-send-pace-again) [fine](#page) ![fine](other.md) [web](https://x.example/#y)\n"
        "`[in code](gone.md)`\n\n```\n[in a block](gone.md)\n# not a heading\n```\n\n"
        "[no file](gone.md) ![no image](gone.png) [no heading](other.md#the-send-pace) [nor here](#not-a-heading)\n"
    )
    assert anchors(tmp_path / "other.md") == {"other-page", "the-send-pace-again"}
    broken = broken_links([tmp_path / "page.md"])
    assert [entry.split(": ", 2)[1] for entry in broken] == [
        "(gone.md)",
        "(gone.png)",
        "(other.md#the-send-pace)",
        "(#not-a-heading)",
    ]
