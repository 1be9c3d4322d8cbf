"""Text in, chunks out: decode a file (refusing binary), then split it by headings and paragraphs.

Every chunk is an exact slice of the document (``text[start:end]``) with its 1-based line range and
the Markdown heading path it sits under, so a search result can be cited as
``guide.md, lines 12-20 (Install > Linux)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agentmaestro.errors import ValidationError

MAX_DOCUMENT_CHARS = 5_000_000
"""The largest text one document may have (characters)."""

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")


@dataclass(frozen=True, kw_only=True)
class Chunk:
    """One piece of a document, as stored in the index."""

    index: int
    """Position of the chunk in its document (0-based)."""
    text: str
    """The exact text: ``document[start:end]``."""
    start: int
    """Offset of the first character in the document."""
    end: int
    """Offset just past the last character."""
    start_line: int
    """First line (1-based)."""
    end_line: int
    """Last line (1-based, inclusive)."""
    heading: str
    """Markdown heading path the chunk sits under (``"Install > Linux"``), or ``""``."""


def decode_text(data: bytes, source: str) -> str:
    """The text of a file's bytes (UTF-8, with or without a BOM); ValidationError for binary content.

    A file is binary when it holds a NUL byte or is not valid UTF-8 (PDFs, images, archives, office files).
    """
    if b"\x00" in data:
        raise ValidationError(f"{source}: binary content (NUL bytes); only text files can be ingested (txt, md, ...)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(
            f"{source}: not UTF-8 text (invalid byte at offset {exc.start}); only text files can be ingested"
        ) from None
    return check_text(text, source)


def check_text(text: str, source: str) -> str:
    """The text itself, if it can be ingested: not empty, no NUL characters, not too long."""
    if "\x00" in text:
        raise ValidationError(f"{source}: text contains NUL characters; only text can be ingested")
    if not text.strip():
        raise ValidationError(f"{source}: the document is empty")
    if len(text) > MAX_DOCUMENT_CHARS:
        raise ValidationError(f"{source}: {len(text)} characters; the limit is {MAX_DOCUMENT_CHARS}")
    return text


@dataclass(frozen=True)
class _Block:
    start: int
    end: int
    section: int
    heading: str


def _blocks(text: str, markdown: bool) -> list[_Block]:
    """Paragraphs (runs of non-blank lines); a Markdown heading starts a new section and is a block of its own."""
    blocks: list[_Block] = []
    path: list[tuple[int, str]] = []
    section = 0
    para_start: int | None = None
    para_end = 0
    in_fence = False
    pos = 0

    def flush() -> None:
        nonlocal para_start
        if para_start is not None:
            blocks.append(_Block(para_start, para_end, section, " > ".join(t for _, t in path)))
            para_start = None

    for line in text.splitlines(keepends=True):
        start, pos = pos, pos + len(line)
        stripped = line.strip()
        if markdown and stripped.startswith(("```", "~~~")):
            in_fence = not in_fence
        match = _HEADING.match(stripped) if markdown and not in_fence else None
        if match:
            flush()
            level = len(match.group(1))
            path = [(lv, t) for lv, t in path if lv < level] + [(level, match.group(2).strip())]
            section += 1
            blocks.append(_Block(start, start + len(line.rstrip("\r\n")), section, " > ".join(t for _, t in path)))
        elif not stripped and not in_fence:
            flush()
        else:
            if para_start is None:
                para_start = start
            para_end = start + len(line.rstrip("\r\n"))
    flush()
    return blocks


def _split_long(text: str, block: _Block, max_chars: int) -> list[_Block]:
    """Cut a block longer than ``max_chars`` at line ends, else at spaces, else hard."""
    out: list[_Block] = []
    start = block.start
    while block.end - start > max_chars:
        window = text[start : start + max_chars]
        cut = window.rfind("\n")
        if cut <= 0:
            cut = window.rfind(" ")
        cut = cut + 1 if cut > 0 else max_chars
        out.append(_Block(start, start + cut, block.section, block.heading))
        start += cut
    out.append(_Block(start, block.end, block.section, block.heading))
    return out


def chunk_text(text: str, *, max_chars: int = 1200, overlap_chars: int = 200, markdown: bool = True) -> list[Chunk]:
    """Split a document into chunks of at most about ``max_chars`` characters.

    Paragraphs are packed together up to the limit; a Markdown heading always starts a new chunk (a chunk
    never spans two sections). Consecutive chunks of one section overlap by the trailing paragraphs of
    the previous chunk that fit in ``overlap_chars``. A paragraph longer than the limit is cut at line
    ends or spaces.
    """
    if max_chars < 50:
        raise ValidationError(f"max_chars must be at least 50, got {max_chars}")
    if not 0 <= overlap_chars < max_chars:
        raise ValidationError(f"overlap_chars must be between 0 and max_chars - 1, got {overlap_chars}")
    units = [piece for b in _blocks(text, markdown) for piece in _split_long(text, b, max_chars)]
    groups: list[list[_Block]] = []
    current: list[_Block] = []
    for unit in units:
        fits = current and unit.section == current[0].section and unit.end - current[0].start <= max_chars
        if current and not fits:
            groups.append(current)
            carry: list[_Block] = []
            if unit.section == current[0].section and overlap_chars:
                for prev in reversed(current):
                    if unit.end - prev.start > max_chars or current[-1].end - prev.start > overlap_chars:
                        break
                    carry.insert(0, prev)
            current = carry
        current.append(unit)
    if current:
        groups.append(current)
    chunks: list[Chunk] = []
    for group in groups:
        start, end = group[0].start, group[-1].end
        body = text[start:end]
        if not body.strip():
            continue
        chunks.append(
            Chunk(
                index=len(chunks),
                text=body,
                start=start,
                end=end,
                start_line=text.count("\n", 0, start) + 1,
                end_line=text.count("\n", 0, end) + 1,
                heading=group[-1].heading,
            )
        )
    return chunks
