"""Research tools for the anthropic_researcher example: search and read a small built-in library of notes.

A real deployment would point these at a document store or a search API; the notes here keep the example
self-contained and offline.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

from agentmaestro import RiskLevel, tool
from agentmaestro.errors import ToolError

NOTES: dict[str, dict[str, str]] = {
    "tides-101": {
        "title": "Why there are two tides a day",
        "text": (
            "The Moon's gravity pulls the ocean toward it on the near side of the Earth, and the Earth is pulled "
            "away from the water on the far side, so two bulges form. As the Earth rotates through both bulges, "
            "most coasts see two high tides and two low tides about every 24 hours and 50 minutes."
        ),
    },
    "spring-neap": {
        "title": "Spring and neap tides",
        "text": (
            "When the Sun and Moon line up (new and full moon) their pulls add up and tides are larger: spring "
            "tides. At quarter moons they pull at right angles and the range is smaller: neap tides."
        ),
    },
    "moon-distance": {
        "title": "The Moon is drifting away",
        "text": (
            "Tidal friction transfers angular momentum from the Earth's rotation to the Moon's orbit: the Moon "
            "recedes by about 3.8 cm per year and the day lengthens by roughly 2 milliseconds per century."
        ),
    },
    "bay-of-fundy": {
        "title": "Bay of Fundy",
        "text": (
            "The Bay of Fundy in Canada has the highest tidal range in the world, up to 16 metres, because the "
            "bay's natural resonance period is close to the 12.4 hour period of the tides."
        ),
    },
}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@tool(risk=RiskLevel.SAFE, idempotent=True)
def search_notes(
    query: Annotated[str, Field(description="Keywords to look for.")],
    limit: Annotated[int, Field(ge=1, le=10, description="Maximum number of results.")] = 3,
) -> list[dict[str, str]]:
    """Search the research notes; returns the best matches (id and title), best first."""
    wanted = _words(query)
    scored = []
    for note_id, note in NOTES.items():
        score = len(wanted & _words(note["title"] + " " + note["text"]))
        if score:
            scored.append((score, note_id, note["title"]))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [{"id": note_id, "title": title} for _, note_id, title in scored[:limit]]


@tool(risk=RiskLevel.SAFE, idempotent=True)
def read_note(note_id: Annotated[str, Field(description="A note id from search_notes.")]) -> str:
    """Read one research note in full."""
    note = NOTES.get(note_id)
    if note is None:
        raise ToolError(f"no note {note_id!r}; search first (known ids: {', '.join(sorted(NOTES))})")
    return f"{note['title']}\n\n{note['text']}"
