"""A fake OAuth 2.0 authorization server (RFC 6749 code grant with RFC 7636 PKCE) on 127.0.0.1.

It checks what a real one checks: the client id and secret (HTTP Basic or form), the redirect URI, a single-use
authorization code, and that ``BASE64URL(SHA256(code_verifier))`` equals the ``code_challenge`` given at
``/authorize``. It issues short-lived access tokens, rotates refresh tokens on each refresh, and serves
``/resource`` as a protected API that refuses expired tokens.

Usage::

    with FakeOAuthServer(token_ttl_s=5) as auth:
        location = auth.authorize(url_from_start)      # what the browser would do after the user consents
        ...
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.fakes.saas_apis import ThreadedApp


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    method: str
    scope: str
    used: bool = False


@dataclass
class FakeOAuthServer:
    """Authorization server and protected resource in one."""

    client_id: str = "maestro-client"
    client_secret: str = "fake-client-secret-0123456789"
    token_ttl_s: float = 3600.0
    fail_refresh: bool = False
    codes: dict[str, _Code] = field(default_factory=dict)
    access_tokens: dict[str, float] = field(default_factory=dict)
    """Issued access token -> expiry (Unix time)."""
    refresh_tokens: set[str] = field(default_factory=set)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    """Every form posted to /token (with the grant type), for assertions."""
    _server: ThreadedApp | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return self._server.url

    def provider_config(self, redirect_url: str, *, token_auth: str = "basic") -> dict[str, Any]:
        """A provider entry pointing at this server."""
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "authorize_url": f"{self.url}/authorize",
            "token_url": f"{self.url}/token",
            "scopes": ["read", "write"],
            "redirect_url": redirect_url,
            "token_auth": token_auth,
        }

    def authorize(self, authorization_url: str) -> str:
        """Visit the authorization URL as a consenting user's browser would; the redirect ``Location``."""
        r = httpx.get(authorization_url, follow_redirects=False, timeout=10)
        assert r.status_code == 302, r.text
        return r.headers["location"]

    # ------------------------------------------------------------------------------------------ endpoints

    async def _authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("response_type") != "code" or q.get("client_id") != self.client_id:
            return JSONResponse({"error": "unauthorized_client"}, 400)
        if q.get("code_challenge_method") != "S256" or len(q.get("code_challenge", "")) != 43:
            return JSONResponse({"error": "invalid_request", "error_description": "PKCE S256 required"}, 400)
        redirect = q.get("redirect_uri", "")
        code = secrets.token_urlsafe(16)
        self.codes[code] = _Code(self.client_id, redirect, q["code_challenge"], "S256", q.get("scope", ""))
        sep = "&" if "?" in redirect else "?"
        return RedirectResponse(f"{redirect}{sep}{urlencode({'code': code, 'state': q.get('state', '')})}", 302)

    def _client_ok(self, request: Request, form: dict[str, str]) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return unquote(user) == self.client_id and unquote(password) == self.client_secret
        return form.get("client_id") == self.client_id and form.get("client_secret") == self.client_secret

    def _issue(self, scope: str) -> dict[str, Any]:
        access, refresh = f"at-{secrets.token_urlsafe(24)}", f"rt-{secrets.token_urlsafe(24)}"
        self.access_tokens[access] = time.time() + self.token_ttl_s
        self.refresh_tokens.add(refresh)
        return {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": self.token_ttl_s,
            "refresh_token": refresh,
            "scope": scope,
        }

    async def _token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        self.token_requests.append(dict(form))
        if not self._client_ok(request, form):
            return JSONResponse({"error": "invalid_client"}, 401)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            entry = self.codes.get(form.get("code", ""))
            if entry is None or entry.used:
                return JSONResponse({"error": "invalid_grant", "error_description": "unknown or used code"}, 400)
            entry.used = True
            if form.get("redirect_uri") != entry.redirect_uri:
                return JSONResponse({"error": "invalid_grant", "error_description": "redirect_uri mismatch"}, 400)
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()
            if not 43 <= len(verifier) <= 128 or digest != entry.challenge:
                return JSONResponse({"error": "invalid_grant", "error_description": "PKCE verification failed"}, 400)
            return JSONResponse(self._issue(entry.scope), headers={"Cache-Control": "no-store"})
        if grant == "refresh_token":
            token = form.get("refresh_token", "")
            if self.fail_refresh or token not in self.refresh_tokens:
                return JSONResponse({"error": "invalid_grant", "error_description": "refresh token revoked"}, 400)
            self.refresh_tokens.discard(token)  # rotation: a refresh token works once
            return JSONResponse(self._issue("read write"), headers={"Cache-Control": "no-store"})
        return JSONResponse({"error": "unsupported_grant_type"}, 400)

    async def _resource(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        expiry = self.access_tokens.get(token)
        if expiry is None or expiry <= time.time():
            return JSONResponse({"error": "invalid_token"}, 401)
        return JSONResponse({"ok": True, "path": request.url.path})

    def __enter__(self) -> FakeOAuthServer:
        app = Starlette(
            routes=[
                Route("/authorize", self._authorize, methods=["GET"]),
                Route("/token", self._token, methods=["POST"]),
                Route("/resource/{path:path}", self._resource, methods=["GET", "POST"]),
            ]
        )
        self._server = ThreadedApp(app).__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.__exit__()


def query_of(url: str) -> dict[str, str]:
    """The query parameters of a URL (first value of each)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
