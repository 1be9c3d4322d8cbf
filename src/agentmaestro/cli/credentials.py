"""``maestro credentials set|list|rm|rotate`` and ``maestro oauth start``: the workspace's encrypted credentials.

Secrets are read from stdin (a hidden prompt on a terminal) or from an environment variable (``--from-env``), so
they do not land in shell history; ``--value`` exists for scripts that accept that. Nothing ever prints a secret:
listings show a masked hint (``…abcd``). Every command works on the database or, with ``--server``, through the API.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from agentmaestro.cli._common import _ctx, _print_json, app, out, when
from agentmaestro.errors import ConfigError
from agentmaestro.service.plane import Plane
from agentmaestro.service.plane.local import LocalPlane
from agentmaestro.service.plane.remote import RemotePlane

credentials_app = typer.Typer(help="Named credentials for tools, encrypted at rest.", no_args_is_help=True)
app.add_typer(credentials_app, name="credentials")
oauth_app = typer.Typer(help="OAuth 2.0 authorizations (PKCE) that store tokens as credentials.", no_args_is_help=True)
app.add_typer(oauth_app, name="oauth")

KINDS = ("api_key", "token", "basic", "oauth2")


def _actor() -> str:
    from agentmaestro.cli._common import cli_actor

    return cli_actor()


def _read_secret(what: str, from_env: str | None, value: str | None) -> str:
    """The secret from --value, an environment variable, or stdin (hidden prompt on a terminal)."""
    if value is not None and from_env is not None:
        raise ConfigError("give either --value or --from-env, not both")
    if value is not None:
        secret = value
    elif from_env is not None:
        secret = os.environ.get(from_env, "")
        if not secret:
            raise ConfigError(f"environment variable {from_env!r} is not set or empty")
    elif sys.stdin.isatty():
        secret = typer.prompt(what, hide_input=True)
    else:
        secret = sys.stdin.read().rstrip("\r\n")
    if not secret:
        raise ConfigError(f"no {what} given (pipe it on stdin, or use --from-env VAR)")
    return secret


_when = when


def _print_rows(rows: list[dict[str, Any]]) -> None:
    table = Table("name", "kind", "provider", "secret", "scopes", "expires", "updated", "by", "refresh error")
    for r in rows:
        table.add_row(
            r["name"],
            r["kind"],
            r["provider"] or "",
            r["hint"],
            " ".join(r["scopes"]),
            _when(r["expires_at"]),
            _when(r["updated_at"]),
            r["updated_by"] or "",
            r["refresh_error"] or "",
        )
    out.print(table)


@credentials_app.command("set")
def credentials_set(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Credential name (letters, digits, '_', '.', '-').")],
    kind: Annotated[str, typer.Option("--kind", "-k", help="api_key, token, basic or oauth2.")] = "token",
    from_env: Annotated[
        str | None, typer.Option("--from-env", help="Read the secret from this environment variable.")
    ] = None,
    value: Annotated[
        str | None, typer.Option("--value", help="The secret itself (lands in shell history; prefer stdin).")
    ] = None,
    username: Annotated[str | None, typer.Option("--username", help="basic: the user name.")] = None,
    refresh_from_env: Annotated[
        str | None, typer.Option("--refresh-from-env", help="oauth2: read a refresh token from this variable.")
    ] = None,
    provider: Annotated[str | None, typer.Option("--provider", help="OAuth provider (oauth2 refreshes).")] = None,
    scope: Annotated[list[str] | None, typer.Option("--scope", help="A scope (repeatable).")] = None,
    expires_in: Annotated[
        float | None, typer.Option("--expires-in", min=0, help="oauth2: seconds until the access token expires.")
    ] = None,
) -> None:
    """Create or replace a credential. The secret comes from stdin or --from-env; only a masked hint is printed."""
    if kind not in KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == "basic" and not username:
        raise ConfigError("a basic credential needs --username (the password comes from stdin or --from-env)")
    if kind != "basic" and username:
        raise ConfigError("--username is for --kind basic")
    if kind != "oauth2" and (refresh_from_env or expires_in is not None):
        raise ConfigError("--refresh-from-env and --expires-in are for --kind oauth2")
    label = {"basic": "password", "oauth2": "access token"}.get(kind, "secret")
    secret_value = _read_secret(label, from_env, value)
    if kind == "basic":
        secret: dict[str, Any] = {"username": username, "password": secret_value}
    elif kind == "oauth2":
        secret = {"access_token": secret_value}
        if refresh_from_env:
            secret["refresh_token"] = _read_secret("refresh token", refresh_from_env, None)
    else:
        secret = {"value": secret_value}
    scopes = list(scope or [])
    import time

    expires_at = time.time() + expires_in if expires_in is not None else None
    c = _ctx(ctx)

    async def go(b: Plane) -> dict[str, Any]:
        if isinstance(b, LocalPlane):
            from agentmaestro.service import credentials

            cmd = credentials.PutCredential(
                name=name, kind=kind, secret=secret, provider=provider, scopes=scopes, expires_at=expires_at
            )
            row, _created = await credentials.put_credential(b.store, cmd, b.actor)
            return row
        assert isinstance(b, RemotePlane)
        return await b.client.set_credential(
            name, kind, provider=provider, scopes=scopes or None, expires_at=expires_at, **secret
        )

    row = c.call(go)
    if c.as_json:
        _print_json(row)
    else:
        out.print(f"stored credential {row['name']!r} ({row['kind']}, secret {row['hint']})", markup=False)


@credentials_app.command("list")
def credentials_list(ctx: typer.Context) -> None:
    """The workspace's credentials: name, kind, provider, masked hint, scopes, expiry, last refresh error."""
    c = _ctx(ctx)

    async def go(b: Plane) -> list[dict[str, Any]]:
        if isinstance(b, LocalPlane):
            return await b.store.credentials.all(b.workspace)
        assert isinstance(b, RemotePlane)
        return await b.client.list_credentials()

    rows = c.call(go)
    if c.as_json:
        _print_json(rows)
    elif rows:
        _print_rows(rows)
    else:
        out.print("no credentials", markup=False)


@credentials_app.command("rm")
def credentials_rm(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Credential name.")]) -> None:
    """Delete a credential (audited)."""
    c = _ctx(ctx)

    async def go(b: Plane) -> dict[str, Any]:
        if isinstance(b, LocalPlane):
            from agentmaestro.service import credentials

            return await credentials.delete_credential(b.store, credentials.DeleteCredential(name=name), b.actor)
        assert isinstance(b, RemotePlane)
        return await b.client.delete_credential(name)

    row = c.call(go)
    if c.as_json:
        _print_json(row)
    else:
        out.print(f"deleted credential {row['name']!r}", markup=False)


@credentials_app.command("rotate")
def credentials_rotate(ctx: typer.Context) -> None:
    """Re-encrypt credentials with the newest key of MAESTRO_SECRET_KEYS (then the old key can be removed).

    Locally: every workspace of the database. With --server: the key's workspace, with the server's keyring.
    """
    c = _ctx(ctx)

    async def go(b: Plane) -> dict[str, Any]:
        if isinstance(b, LocalPlane):
            from agentmaestro.crypto import keyring
            from agentmaestro.service import credentials

            cmd = credentials.RotateCredentials(every_workspace=True)
            counts = await credentials.rotate_credentials(b.store, cmd, b.actor)
            return {"rotated": sum(counts.values()), "workspaces": counts, "key_id": keyring().key_id}
        assert isinstance(b, RemotePlane)
        return await b.client.rotate_credentials()

    result = c.call(go)
    if c.as_json:
        _print_json(result)
    else:
        out.print(f"re-encrypted {result['rotated']} credential(s) with key {result['key_id']}", markup=False)


@oauth_app.command("start")
def oauth_start(
    ctx: typer.Context,
    provider: Annotated[str, typer.Argument(help="A configured OAuth provider (docs/credentials.md).")],
    name: Annotated[str, typer.Option("--name", "-n", help="Store the tokens as this credential.")],
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="A scope (repeatable; default: the provider's).")
    ] = None,
) -> None:
    """Print the provider's authorization URL; after consent the server's callback stores the tokens as NAME.

    The callback is served by `maestro serve` (the provider's redirect_url), which must share this database.
    """
    c = _ctx(ctx)

    async def go(b: Plane) -> dict[str, Any]:
        if isinstance(b, LocalPlane):
            from agentmaestro.credentials import oauth

            await b.store.workspaces.ensure(b.workspace)
            return await oauth.start(
                b.store, b.workspace, provider=provider, credential=name, actor=_actor(), scopes=scope or None
            )
        assert isinstance(b, RemotePlane)
        return await b.client.oauth_start(provider, name, scopes=scope or None)

    started = c.call(go)
    if c.as_json:
        _print_json(started)
    else:
        out.print(
            f"Open this URL to authorize {started['provider']} (valid until {_when(started['expires_at'])}); "
            f"the tokens will be stored as credential {started['name']!r}:\n{started['authorization_url']}",
            markup=False,
            soft_wrap=True,
        )
