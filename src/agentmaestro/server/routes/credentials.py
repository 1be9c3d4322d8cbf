"""/v1/credentials and /v1/integrations/oauth: the workspace's named credentials and the OAuth 2.0 (PKCE) flow.

Admins write credentials, viewers list their metadata; no answer ever holds a secret, only a masked hint. The OAuth
callback is the one route without an API key: the provider's redirect carries no key, so the single-use ``state``
(bound to the workspace that started the flow) is what authorizes it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentmaestro.credentials import oauth
from agentmaestro.server.auth import Admin, Operator, Viewer, get_store
from agentmaestro.service import credentials
from agentmaestro.store.base import Store

router = APIRouter(prefix="/v1", tags=["credentials and integrations"])
StoreDep = Annotated[Store, Depends(get_store)]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_PROVIDER = r"^[a-z0-9][a-z0-9_.-]{0,99}$"
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
CredentialName = Annotated[str, Path(pattern=_NAME, description="The credential's name.")]
Kind = Literal["api_key", "token", "basic", "oauth2"]
Secret = Annotated[str, Field(min_length=1, max_length=20_000, pattern=r"^[^\x00]+$")]
Scope = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]


class CredentialCreate(BaseModel):
    """A credential to create or replace. Which secret fields it takes depends on ``kind``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=_NAME, description="1-100 letters, digits, '_', '.' or '-'.")
    kind: Kind = Field(description="api_key/token: value; basic: username, password; oauth2: access_token, ...")
    value: Secret | None = Field(default=None, description="The key or token (api_key, token).")
    username: Secret | None = Field(default=None, description="basic: the user name.")
    password: Secret | None = Field(default=None, description="basic: the password.")
    access_token: Secret | None = Field(default=None, description="oauth2: the access token.")
    refresh_token: Secret | None = Field(default=None, description="oauth2: the refresh token.")
    token_type: str | None = Field(default=None, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")
    expires_at: float | None = Field(default=None, ge=0, le=1e11, description="oauth2: when the token expires.")
    provider: str | None = Field(default=None, pattern=_PROVIDER, description="OAuth provider (for refreshes).")
    scopes: list[Scope] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _fields_match_kind(self) -> Self:
        allowed = {
            "api_key": {"value"},
            "token": {"value"},
            "basic": {"username", "password"},
            "oauth2": {"access_token", "refresh_token", "token_type"},
        }[self.kind]
        required = {"api_key": {"value"}, "token": {"value"}, "basic": {"username", "password"}}.get(
            self.kind, {"access_token"}
        )
        given = {
            f
            for f in ("value", "username", "password", "access_token", "refresh_token", "token_type")
            if getattr(self, f)
        }
        if given - allowed:
            raise ValueError(f"a {self.kind} credential does not take {sorted(given - allowed)}")
        if required - given:
            raise ValueError(f"a {self.kind} credential needs {sorted(required - given)}")
        if self.expires_at is not None and self.kind != "oauth2":
            raise ValueError("expires_at is for oauth2 credentials")
        return self

    def secret(self) -> dict[str, Any]:
        """The secret fields."""
        fields = ("value", "username", "password", "access_token", "refresh_token", "token_type")
        return {f: getattr(self, f) for f in fields if getattr(self, f)}


class Credential(BaseModel):
    """A credential's metadata: never the secret, only a masked hint of it."""

    workspace_id: str
    name: str
    kind: Kind
    provider: str | None
    scopes: list[str]
    hint: str = Field(description="The secret's last characters, e.g. '…abcd' ('…' for short secrets).")
    key_id: str = Field(description="Fingerprint of the keyring key that encrypted it (see rotation).")
    expires_at: float | None
    refresh_error: str | None = Field(description="Why the last token refresh failed, if it did.")
    created_at: float
    created_by: str | None
    updated_at: float
    updated_by: str | None


class RotateResult(BaseModel):
    """Credentials re-encrypted with the newest key."""

    rotated: int
    key_id: str = Field(description="Fingerprint of the key now encrypting them.")


class OAuthStart(BaseModel):
    """Start an OAuth authorization whose tokens become credential ``name``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    provider: str = Field(pattern=_PROVIDER, description="A configured provider (docs/credentials.md).")
    name: str = Field(pattern=_NAME, description="The credential the tokens are stored as.")
    scopes: list[Scope] | None = Field(default=None, max_length=100, description="Default: the provider's scopes.")


class OAuthStarted(BaseModel):
    """Open ``authorization_url`` in a browser before ``expires_at``; the provider redirects to the callback."""

    provider: str
    name: str
    authorization_url: str
    expires_at: float


def _providers(request: Request) -> dict[str, oauth.Provider] | None:
    """The app's providers when set (tests, embedding), else None: read from the configuration on each use."""
    providers: dict[str, oauth.Provider] | None = getattr(request.app.state, "oauth_providers", None)
    return providers


@router.get("/credentials", response_model=list[Credential], summary="List credentials")
async def list_credentials(principal: Viewer, store: StoreDep) -> list[dict[str, Any]]:
    """The workspace's credentials by name: metadata and masked hints, never secrets."""
    return await store.credentials.all(principal.workspace_id)


@router.post(
    "/credentials",
    status_code=201,
    response_model=Credential,
    summary="Create or replace a credential",
    responses={200: {"model": Credential, "description": "Replaced"}},
)
async def put_credential(body: CredentialCreate, principal: Admin, store: StoreDep, response: Response) -> Any:
    """Store a credential encrypted (201) or replace one of that name (200); audited. The answer holds no secret."""
    cmd = credentials.PutCredential(
        name=body.name,
        kind=body.kind,
        secret=body.secret(),
        provider=body.provider,
        scopes=body.scopes,
        expires_at=body.expires_at,
    )
    row, created = await credentials.put_credential(store, cmd, principal.as_actor())
    if not created:
        response.status_code = 200
    return row


@router.post("/credentials/rotate", response_model=RotateResult, summary="Re-encrypt credentials with the newest key")
async def rotate_credentials(principal: Admin, store: StoreDep) -> dict[str, Any]:
    """Re-encrypt every credential of the workspace with the newest key of the keyring (audited)."""
    from agentmaestro.crypto import keyring

    counts = await credentials.rotate_credentials(store, credentials.RotateCredentials(), principal.as_actor())
    return {"rotated": counts.get(principal.workspace_id, 0), "key_id": keyring().key_id}


@router.get("/credentials/{credential}", response_model=Credential, summary="Get a credential's metadata")
async def get_credential(credential: CredentialName, principal: Viewer, store: StoreDep) -> dict[str, Any]:
    """One credential's metadata and masked hint (another workspace's answers 404)."""
    return await store.credentials.get(principal.workspace_id, credential)


@router.delete("/credentials/{credential}", response_model=Credential, summary="Delete a credential")
async def delete_credential(credential: CredentialName, principal: Admin, store: StoreDep) -> dict[str, Any]:
    """Delete a credential (audited); its last metadata."""
    return await credentials.delete_credential(
        store, credentials.DeleteCredential(name=credential), principal.as_actor()
    )


@router.post("/integrations/oauth/start", response_model=OAuthStarted, summary="Start an OAuth authorization")
async def oauth_start(body: OAuthStart, principal: Operator, store: StoreDep, request: Request) -> dict[str, Any]:
    """The provider's authorization URL, with a single-use state and a PKCE S256 challenge (valid 10 minutes)."""
    return await oauth.start(
        store,
        principal.workspace_id,
        provider=body.provider,
        credential=body.name,
        actor=principal.actor,
        scopes=body.scopes,
        providers=_providers(request),
    )


@router.get(
    "/integrations/oauth/callback",
    response_model=Credential,
    summary="OAuth redirect target",
    responses={400: {"description": "Unknown, used or expired state; or the provider refused"}},
)
async def oauth_callback(
    store: StoreDep,
    request: Request,
    state: Annotated[str, Query(min_length=1, max_length=200, pattern=_NO_CONTROL, description="From the start.")],
    code: Annotated[str | None, Query(max_length=4000, pattern=_NO_CONTROL, description="The grant.")] = None,
    error: Annotated[str | None, Query(max_length=200, pattern=_NO_CONTROL)] = None,
    error_description: Annotated[str | None, Query(max_length=1000, pattern=_NO_CONTROL)] = None,
) -> dict[str, Any]:
    """Exchange the provider's code (with the PKCE verifier) for tokens, stored as an oauth2 credential.

    Needs no API key: the single-use state, bound to the workspace that started the flow, authorizes the call.
    """
    if error or not code:
        pending = await store.credentials.consume_oauth_state(state)  # a refusal still uses the state up
        why = f"{error}: {error_description}" if error and error_description else error or "no code in the redirect"
        raise oauth.OAuthError(f"provider {pending['provider']!r} did not grant access ({why[:500]})")
    return await oauth.complete(store, code=code, state=state, providers=_providers(request))
