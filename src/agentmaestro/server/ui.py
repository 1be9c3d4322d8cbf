"""The web dashboard: ``GET /`` serves its page, ``GET /ui/...`` its static files (no build step, no Node).

The files live in ``agentmaestro/ui`` (our own HTML, CSS and ES modules, plus libraries vendored by
``scripts/vendor_ui.sh``). The page holds no data: it signs in with an API key kept in the tab's
``sessionStorage`` and calls the REST API with ``Authorization: Bearer``. No cookie is ever set,
so a cross-site page cannot make the browser act on the user's behalf (no CSRF).

Every response carries a strict Content-Security-Policy: scripts and styles only from this origin,
no inline script, no ``eval``, no framing. The dashboard renders agent and tool output as text
(``textContent``), and the policy is the second line of defence if a bug ever did not.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Final

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

UI_DIR: Final = Path(__file__).resolve().parent.parent / "ui"
"""Where the dashboard's files are."""

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Content-Security-Policy of every dashboard response."""

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
"""Headers of every dashboard response (``no-cache``: revalidate, so an upgrade is seen at once)."""

MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
"""The only kinds of file served; anything else answers 404."""

router = APIRouter(include_in_schema=False)


def _not_found() -> Response:
    return Response("not found\n", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)


def resolve(path: str, root: Path = UI_DIR) -> Path | None:
    """The file ``path`` names under ``root``, or None if it is outside, hidden, missing or of an unserved kind."""
    if not path or "\\" in path or "\x00" in path:
        return None
    parts = path.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    candidate = (root / path).resolve()
    if not candidate.is_relative_to(root.resolve()) or not candidate.is_file():
        return None
    if candidate.suffix not in MEDIA_TYPES:
        return None
    return candidate


@router.get("/")
async def dashboard() -> Response:
    """The dashboard's single page."""
    return FileResponse(UI_DIR / "index.html", media_type=MEDIA_TYPES[".html"], headers=SECURITY_HEADERS)


@router.get("/ui/{path:path}")
async def asset(path: str) -> Response:
    """A static file of the dashboard."""
    found = resolve(path)
    if found is None:
        return _not_found()
    media_type = MEDIA_TYPES.get(found.suffix) or mimetypes.guess_type(found.name)[0] or "application/octet-stream"
    return FileResponse(found, media_type=media_type, headers=SECURITY_HEADERS)
