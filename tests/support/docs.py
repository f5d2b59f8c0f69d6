"""The code blocks of README.md and docs/*.md: parsed once for the tests that run them
verbatim (the docs tests, the README walkthrough, the live examples)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
_FENCE = re.compile(r"^( *)```(\S*)\s*$")
_SECTION = re.compile(r"^\s*<!-- ([\w-]+):(start|end) -->\s*$")
_NOTE = re.compile(r"^\s*<!-- (.*?) -->\s*$")


@dataclass(frozen=True)
class DocBlock:
    """A fenced code block of README.md or docs/*.md."""

    path: Path
    line: int
    language: str
    code: str
    note: str | None  # the HTML comment just before it: "not run: why", ...
    sections: tuple[str, ...]  # the <!-- NAME:start --> ... <!-- NAME:end --> it is in

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_code_blocks(path: Path) -> list[DocBlock]:
    """Every fenced block of ``path`` (indented ones in list items too, dedented)."""
    lines = path.read_text().split("\n")
    blocks: list[DocBlock] = []
    sections: list[str] = []
    previous = ""  # the last non-blank line before the block
    index = 0
    while index < len(lines):
        line = lines[index]
        if marker := _SECTION.match(line):
            name, edge = marker.groups()
            if edge == "start":
                sections.append(name)
            else:
                assert sections and sections[-1] == name, f"{path}:{index + 1}: stray {name} end"
                sections.pop()
        if fence := _FENCE.match(line):
            indent, language = fence.groups()
            start, body = index + 1, []
            index += 1
            while lines[index].rstrip() != indent + "```":
                body.append(lines[index][len(indent):])
                index += 1
            note = _NOTE.match(previous)
            blocks.append(DocBlock(path, start, language, "\n".join(body) + "\n",
                                   note.group(1) if note and not _SECTION.match(previous)
                                   else None, tuple(sections)))
            previous = ""
        elif line.strip():
            previous = line
        index += 1
    assert not sections, f"{path}: {sections} never end"
    return blocks


def doc_blocks(name: str, language: str) -> list[str]:
    """The ``language`` blocks inside ``<!-- name:start -->`` ... ``<!-- name:end -->`` in
    README.md or docs/*.md: the example a test runs verbatim, wherever the docs keep it."""
    blocks = [block.code for path in DOC_FILES for block in doc_code_blocks(path)
              if name in block.sections and block.language == language]
    assert blocks, f"the docs have no {language} block in a section named {name!r}"
    return blocks


def doc_blocks_noted(note: str) -> list[DocBlock]:
    """The blocks of README.md and docs/*.md marked ``<!-- note -->``."""
    return [block for path in DOC_FILES for block in doc_code_blocks(path) if block.note == note]
