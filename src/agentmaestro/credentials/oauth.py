"""OAuth 2.0 authorization-code flow with PKCE (RFC 6749, RFC 7636 ``S256``), and token refresh.

Providers are configured in YAML (``MAESTRO_OAUTH_CONFIG``, default ``$MAESTRO_HOME/oauth.yaml``)::

    providers:
      github:
        client_id: Iv1.0123456789
        client_secret_env: GITHUB_CLIENT_SECRET      # or client_secret: ... (keep it out of version control)
        authorize_url: https://github.com/login/oauth/authorize
        token_url: https://github.com/login/oauth/access_token
        scopes: [repo]
        redirect_url: https://maestro.example.com/v1/integrations/oauth/callback
        token_auth: post                              # basic (default, RFC 6749 2.3.1) or post

or in the environment, one variable per field: ``MAESTRO_OAUTH_<PROVIDER>_CLIENT_ID``, ``..._CLIENT_SECRET``,
``..._AUTHORIZE_URL``, ``..._TOKEN_URL``, ``..._SCOPES`` (space or comma separated), ``..._REDIRECT_URL``,
``..._TOKEN_AUTH``; environment values override the file's. ``MAESTRO_OAUTH_REDIRECT_URL`` is the default redirect.

:func:`start` creates a random ``state`` (stored hashed, single use, expiring, bound to the caller's workspace) and a
PKCE verifier (stored encrypted) and answers the provider's authorization URL with the S256 challenge.
:func:`complete` consumes the state, exchanges the code and verifier at the token endpoint and stores the tokens as an
encrypted ``oauth2`` credential. :func:`refresh_tokens` runs the ``refresh_token`` grant.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx
import yaml

from agentmaestro.errors import ConfigError, MaestroError, NotFoundError
from agentmaestro.tools.redact import redact, register_secret

__all__ = [
    "OAuthError",
    "Provider",
    "TokenSet",
    "authorization_url",
    "complete",
    "exchange_code",
    "load_providers",
    "pkce_pair",
    "refresh_tokens",
    "start",
]

CONFIG_ENV = "MAESTRO_OAUTH_CONFIG"
REDIRECT_ENV = "MAESTRO_OAUTH_REDIRECT_URL"
STATE_TTL_S = 600.0
"""Seconds a started authorization waits for its callback."""
HTTP_TIMEOUT_S = 20.0
_ENV_RE = re.compile(
    r"^MAESTRO_OAUTH_([A-Z0-9_]+?)_(CLIENT_ID|CLIENT_SECRET|AUTHORIZE_URL|TOKEN_URL|SCOPES|REDIRECT_URL|TOKEN_AUTH)$"
)
_FIELDS = {"client_id", "client_secret", "client_secret_env", "authorize_url", "token_url", "scopes", "redirect_url"}
_FIELDS |= {"token_auth", "authorize_params"}
_PROVIDER_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")


class OAuthError(MaestroError):
    """An authorization or a token request failed (the message says where and why; never a secret)."""

    code = "oauth_failed"


@dataclass(frozen=True, kw_only=True)
class Provider:
    """One OAuth 2.0 authorization server and this deployment's client registration at it."""

    name: str
    """How credentials and commands refer to it (``github``)."""
    client_id: str
    """The registered client id."""
    client_secret: str = field(default="", repr=False)
    """The client secret (empty for a public client, which relies on PKCE alone)."""
    authorize_url: str
    """Where the user's browser is sent to grant access."""
    token_url: str
    """Where codes and refresh tokens are exchanged for tokens."""
    scopes: tuple[str, ...] = ()
    """Scopes requested when the caller names none."""
    redirect_url: str
    """This server's callback, as registered at the provider (``.../v1/integrations/oauth/callback``)."""
    token_auth: Literal["basic", "post"] = "basic"
    """How the client authenticates at the token endpoint: HTTP Basic (RFC 6749 2.3.1) or form fields."""
    authorize_params: Mapping[str, str] = field(default_factory=dict)
    """Extra query parameters for the authorization URL (e.g. ``access_type: offline``)."""


@dataclass(frozen=True, kw_only=True)
class TokenSet:
    """Tokens from a token endpoint."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    token_type: str = "Bearer"
    expires_at: float | None = None
    """Unix time the access token expires (None when the provider did not say)."""
    scopes: tuple[str, ...] = ()

    def secret(self) -> dict[str, str]:
        """The secret fields of an ``oauth2`` credential."""
        out = {"access_token": self.access_token, "token_type": self.token_type}
        if self.refresh_token:
            out["refresh_token"] = self.refresh_token
        return out


# ------------------------------------------------------------------------------------------------ configuration


def _http_url(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise ConfigError(f"{what} must be an http(s) URL, got {value!r}")
    return value


def _provider(name: str, raw: Mapping[str, Any], environ: Mapping[str, str], source: str) -> Provider:
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise ConfigError(f"{source}: provider {name!r} has unknown field(s) {unknown}; known: {sorted(_FIELDS)}")
    if not _PROVIDER_RE.match(name):
        raise ConfigError(f"{source}: invalid provider name {name!r} (lowercase letters, digits, '_', '.', '-')")
    secret = raw.get("client_secret") or ""
    if raw.get("client_secret_env"):
        secret = environ.get(str(raw["client_secret_env"]), "")
        if not secret:
            raise ConfigError(
                f"{source}: provider {name!r}: environment variable {raw['client_secret_env']!r} is empty"
            )
    scopes = raw.get("scopes") or ()
    if isinstance(scopes, str):
        scopes = scopes.replace(",", " ").split()
    if not isinstance(scopes, list | tuple) or not all(isinstance(s, str) for s in scopes):
        raise ConfigError(f"{source}: provider {name!r}: scopes must be a list of strings")
    token_auth: Literal["basic", "post"] = "post" if raw.get("token_auth") == "post" else "basic"
    if raw.get("token_auth") not in (None, "", "basic", "post"):
        got = raw["token_auth"]
        raise ConfigError(f"{source}: provider {name!r}: token_auth must be 'basic' or 'post', got {got!r}")
    params = raw.get("authorize_params") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: provider {name!r}: authorize_params must be a mapping")
    if not raw.get("client_id"):
        raise ConfigError(f"{source}: provider {name!r} needs client_id")
    redirect = raw.get("redirect_url") or environ.get(REDIRECT_ENV)
    if not redirect:
        raise ConfigError(f"{source}: provider {name!r} needs redirect_url (or set {REDIRECT_ENV})")
    return Provider(
        name=name,
        client_id=str(raw["client_id"]),
        client_secret=str(secret),
        authorize_url=_http_url(raw.get("authorize_url"), f"{source}: provider {name!r}: authorize_url"),
        token_url=_http_url(raw.get("token_url"), f"{source}: provider {name!r}: token_url"),
        scopes=tuple(scopes),
        redirect_url=_http_url(redirect, f"{source}: provider {name!r}: redirect_url"),
        token_auth=token_auth,
        authorize_params={str(k): str(v) for k, v in params.items()},
    )


def load_providers(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Provider]:
    """The configured providers by name, from the YAML file and the environment (see the module docstring).

    Raises:
        ConfigError: The file is unreadable or a provider is incomplete or malformed.
    """
    env = os.environ if environ is None else environ
    raw: dict[str, dict[str, Any]] = {}
    source = "environment"
    file = Path(path) if path else Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None
    if file is None:
        default = Path(env.get("MAESTRO_HOME", ".maestro")) / "oauth.yaml"
        file = default if default.is_file() else None
    if file is not None:
        source = str(file)
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read OAuth config {source!r}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None
        providers = data.get("providers") if isinstance(data, dict) else None
        if not isinstance(providers, dict) or not all(isinstance(v, dict) for v in providers.values()):
            raise ConfigError(f"{source}: expected a mapping 'providers: {{NAME: {{client_id: ..., ...}}}}'")
        raw = {str(k): dict(v) for k, v in providers.items()}
    for key, value in env.items():
        m = _ENV_RE.match(key)
        if m:
            raw.setdefault(m.group(1).lower(), {})[m.group(2).lower()] = value
    return {name: _provider(name, fields, env, source) for name, fields in sorted(raw.items())}


def get_provider(name: str, providers: Mapping[str, Provider] | None = None) -> Provider:
    """One configured provider (NotFoundError naming the configured ones otherwise)."""
    known = load_providers() if providers is None else providers
    if name not in known:
        names = ", ".join(sorted(known)) or f"none (configure them in {CONFIG_ENV} or $MAESTRO_HOME/oauth.yaml)"
        raise NotFoundError(f"OAuth provider {name!r} is not configured; configured: {names}")
    return known[name]


# --------------------------------------------------------------------------------------------------- protocol


def pkce_pair() -> tuple[str, str]:
    """A PKCE ``(code_verifier, code_challenge)`` for the S256 method (RFC 7636 4.1-4.2).

    The verifier is 86 characters of the unreserved set (43-128 allowed); the challenge is
    ``BASE64URL(SHA256(ASCII(verifier)))`` without padding.
    """
    verifier = secrets.token_urlsafe(64)
    return verifier, s256(verifier)


def s256(verifier: str) -> str:
    """The S256 code challenge of a verifier."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_url(provider: Provider, *, state: str, challenge: str, scopes: Sequence[str]) -> str:
    """The URL to send the user's browser to (RFC 6749 4.1.1 with the RFC 7636 4.3 parameters)."""
    parts = urlsplit(provider.authorize_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += list(provider.authorize_params.items())
    query += [
        ("response_type", "code"),
        ("client_id", provider.client_id),
        ("redirect_uri", provider.redirect_url),
        ("state", state),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
    if scopes:
        query.append(("scope", " ".join(scopes)))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def _client_auth(provider: Provider, data: dict[str, str]) -> dict[str, str]:
    """Headers for client authentication; adds form fields for ``post`` (RFC 6749 2.3.1)."""
    headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
    if provider.token_auth == "basic" and provider.client_secret:
        # The id and secret are form-urlencoded before being joined, as RFC 6749 2.3.1 says.
        pair = f"{quote(provider.client_id, safe='')}:{quote(provider.client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    else:
        data["client_id"] = provider.client_id
        if provider.client_secret:
            data["client_secret"] = provider.client_secret
    return headers


def _parse_tokens(provider: Provider, response: httpx.Response, now: float, requested: Sequence[str]) -> TokenSet:
    ctype = response.headers.get("content-type", "")
    try:
        body: dict[str, Any] = (
            dict(parse_qsl(response.text)) if "x-www-form-urlencoded" in ctype else dict(json.loads(response.text))
        )
    except (ValueError, TypeError):
        body = {}
    if response.status_code >= 400 or "error" in body:
        error = str(body.get("error") or f"HTTP {response.status_code}")
        desc = body.get("error_description")
        detail = f"{error}: {desc}" if desc else error
        raise OAuthError(redact(f"token endpoint of {provider.name!r} refused the request ({detail})"[:500]))
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise OAuthError(f"token endpoint of {provider.name!r} answered without an access_token")
    register_secret(token)
    refresh = body.get("refresh_token")
    if isinstance(refresh, str) and refresh:
        register_secret(refresh)
    else:
        refresh = None
    expires_in = body.get("expires_in")
    try:
        expires_at = now + float(expires_in) if expires_in not in (None, "") else None
    except (TypeError, ValueError):
        expires_at = None
    scope = body.get("scope")
    scopes = tuple(str(scope).replace(",", " ").split()) if scope else tuple(requested)
    token_type = str(body.get("token_type") or "Bearer")
    if token_type.lower() == "bearer":
        token_type = "Bearer"
    return TokenSet(
        access_token=token, refresh_token=refresh, token_type=token_type, expires_at=expires_at, scopes=scopes
    )


async def _token_request(
    provider: Provider, data: dict[str, str], requested: Sequence[str], http: httpx.AsyncClient | None
) -> TokenSet:
    headers = _client_auth(provider, data)
    now = time.time()
    try:
        if http is not None:
            response = await http.post(provider.token_url, data=data, headers=headers)
        else:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, follow_redirects=False) as client:
                response = await client.post(provider.token_url, data=data, headers=headers)
    except httpx.HTTPError as exc:
        raise OAuthError(
            f"could not reach the token endpoint of {provider.name!r} ({type(exc).__name__}: {redact(str(exc))[:200]})"
        ) from None
    return _parse_tokens(provider, response, now, requested)


async def exchange_code(
    provider: Provider, *, code: str, verifier: str, scopes: Sequence[str] = (), http: httpx.AsyncClient | None = None
) -> TokenSet:
    """Exchange an authorization code and its PKCE verifier for tokens (RFC 6749 4.1.3, RFC 7636 4.5)."""
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": provider.redirect_url,
        "code_verifier": verifier,
    }
    return await _token_request(provider, data, scopes, http)


async def refresh_tokens(
    provider: Provider, refresh_token: str, *, scopes: Sequence[str] = (), http: httpx.AsyncClient | None = None
) -> TokenSet:
    """New tokens from a refresh token (RFC 6749 6); keeps the old refresh token when no new one is issued."""
    tokens = await _token_request(
        provider, {"grant_type": "refresh_token", "refresh_token": refresh_token}, scopes, http
    )
    if tokens.refresh_token is None:
        tokens = TokenSet(
            access_token=tokens.access_token,
            refresh_token=refresh_token,
            token_type=tokens.token_type,
            expires_at=tokens.expires_at,
            scopes=tokens.scopes,
        )
    return tokens


# ------------------------------------------------------------------------------------------------------- flow


async def start(
    store: Any,
    workspace_id: str,
    *,
    provider: str,
    credential: str,
    actor: str,
    scopes: Sequence[str] | None = None,
    providers: Mapping[str, Provider] | None = None,
) -> dict[str, Any]:
    """Begin an authorization for ``credential`` of ``workspace_id``: the URL to open and when it expires."""
    from agentmaestro.store.credentials import check_name

    check_name(credential)
    p = get_provider(provider, providers)
    wanted = tuple(scopes) if scopes else p.scopes
    state = secrets.token_urlsafe(32)
    verifier, challenge = pkce_pair()
    expires_at = await store.credentials.create_oauth_state(
        workspace_id,
        state=state,
        provider=p.name,
        credential=credential,
        verifier=verifier,
        redirect_url=p.redirect_url,
        scopes=wanted,
        actor=actor,
        ttl_s=STATE_TTL_S,
    )
    return {
        "provider": p.name,
        "name": credential,
        "authorization_url": authorization_url(p, state=state, challenge=challenge, scopes=wanted),
        "expires_at": expires_at,
    }


async def complete(
    store: Any,
    *,
    code: str,
    state: str,
    providers: Mapping[str, Provider] | None = None,
    http: httpx.AsyncClient | None = None,
) -> dict[str, Any]:
    """Finish an authorization: consume ``state`` (once), exchange ``code``, store the tokens; the credential row."""
    pending = await store.credentials.consume_oauth_state(state)
    p = get_provider(pending["provider"], providers)
    if p.redirect_url != pending["redirect_url"]:
        raise OAuthError(
            f"the redirect URL of provider {p.name!r} changed since the authorization started; start again"
        )
    tokens = await exchange_code(p, code=code, verifier=pending["verifier"], scopes=pending["scopes"], http=http)
    row, _created = await store.credentials.put(
        pending["workspace_id"],
        name=pending["credential"],
        kind="oauth2",
        secret=tokens.secret(),
        provider=p.name,
        scopes=list(tokens.scopes),
        expires_at=tokens.expires_at,
        actor=pending["created_by"] or f"oauth:{p.name}",
    )
    return dict(row)
