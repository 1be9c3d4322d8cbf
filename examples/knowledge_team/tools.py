"""The reviewer's tool: check that every citation [n] in a draft points at a source the researcher retrieved."""

from __future__ import annotations

import re

from agentmaestro import RiskLevel, tool

_CITE = re.compile(r"\[(\d+)\]")
_SOURCE = re.compile(r"^\[(\d+)\] (.+?) \(score", re.MULTILINE)


@tool(risk=RiskLevel.SAFE, idempotent=True)
def check_citations(review: str) -> str:
    """Check a draft's citations; ``review`` holds 'DRAFT:' then the draft, then 'SOURCES:' then the passages."""
    draft, sep, sources = review.partition("SOURCES:")
    if not sep:
        return "REJECTED: no SOURCES section to check the draft against"
    draft = draft.removeprefix("DRAFT:").strip()
    known = {int(n): where for n, where in _SOURCE.findall(sources)}
    cited = sorted({int(n) for n in _CITE.findall(draft)})
    if not cited:
        return "REJECTED: the draft cites no source"
    missing = [n for n in cited if n not in known]
    if missing:
        return f"REJECTED: citations {', '.join(f'[{n}]' for n in missing)} match no retrieved source"
    uncited = [s for s in re.split(r"(?<=[.!?])\s+", draft) if s and not _CITE.search(s)]
    if uncited:
        return f"REJECTED: {len(uncited)} sentence(s) without a citation, first: {uncited[0]!r}"
    refs = "; ".join(f"[{n}] {known[n]}" for n in cited)
    return f"APPROVED: every sentence is cited and every citation is a retrieved source. {refs}"
