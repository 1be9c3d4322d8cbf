"""``maestro serve``, ``maestro keys ...`` and ``maestro workspaces ...``."""

from __future__ import annotations

import errno
import os
import re
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agentmaestro.cli._common import _Ctx, _ctx, _print_json, _run, app, cli_actor, out
from agentmaestro.errors import ConfigError
from agentmaestro.store.base import Store
from agentmaestro.store.dialects import DEFAULT_HOME, redact_url

keys_app = typer.Typer(help="API keys (shown once, stored hashed).", no_args_is_help=True)
workspaces_app = typer.Typer(help="Workspaces (tenants).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(workspaces_app, name="workspaces")

_WORKSPACE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


async def _with_store(c: _Ctx, fn: Any) -> Any:
    store = c.open_store()
    try:
        return await fn(store)
    finally:
        await store.close()


@workspaces_app.command("create")
def workspaces_create(
    ctx: typer.Context,
    workspace_id: Annotated[str, typer.Argument(help="Lowercase id: letters, digits, '-' and '_'.")],
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
) -> None:
    """Create a workspace."""
    c = _ctx(ctx)
    c.local_only("workspaces create")
    if not _WORKSPACE_RE.match(workspace_id):
        raise ConfigError(f"workspace id {workspace_id!r} must be 1-64 lowercase letters, digits, '-' or '_'")
    c.call(lambda b: b.create_workspace(workspace_id, name))
    out.print(f"workspace {workspace_id} created", markup=False)


@workspaces_app.command("list")
def workspaces_list(ctx: typer.Context) -> None:
    """List workspaces (with --server: the API key's workspace)."""
    c = _ctx(ctx)
    rows = c.call(lambda b: b.list_workspaces())
    if c.as_json:
        _print_json(rows)
        return
    table = Table("workspace_id", "name")
    for r in rows:
        table.add_row(r["workspace_id"], r["name"])
    out.print(table)


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="What the key is for.")],
    role: Annotated[str, typer.Option("--role", help="viewer, operator or admin.")] = "operator",
    user: Annotated[
        str | None,
        typer.Option("--user", help="Email of the person the key belongs to (only its SHA-256 is stored)."),
    ] = None,
) -> None:
    """Create an API key in the workspace; the key is printed once."""
    c = _ctx(ctx)
    row, key = c.call(lambda b: b.create_key(name, role, user))
    if c.as_json:
        _print_json({**row, "key": key})
        return
    out.print(f"{key}", markup=False)
    sys.stderr.write(
        f"created {row['role']} key {row['key_id']} in workspace {row['workspace_id']}; "
        "it is shown only now, store it safely\n"
    )


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """List the workspace's keys (never their secrets)."""
    c = _ctx(ctx)
    rows = c.call(lambda b: b.list_keys())
    if c.as_json:
        _print_json(rows)
        return
    table = Table("key_id", "name", "role", "prefix", "user", "revoked")
    for r in rows:
        user = f"{r['user_hash'][:12]}…" if r.get("user_hash") else ""
        table.add_row(r["key_id"], r["name"], r["role"], r["prefix"] + "…", user, "yes" if r["revoked_at"] else "")
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: str) -> None:
    """Revoke a key of the workspace."""
    c = _ctx(ctx)
    c.call(lambda b: b.revoke_key(key_id))
    out.print(f"key {key_id} revoked", markup=False)


BOOTSTRAP_KEY_FILE = "bootstrap-admin.key"
"""Where ``maestro serve`` keeps the admin key it creates on first start (under ``$MAESTRO_HOME``, mode 0600)."""


def _save_bootstrap_key(path: Path, key: str) -> None:
    """Write the bootstrap key readable only by its owner (so later starts can show it again)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
    except OSError as exc:  # not fatal: the key is printed anyway
        sys.stderr.write(f"note: could not save the key to {path}: {exc}\n")


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0 picks a free one).")] = 8000,
    worker: Annotated[bool, typer.Option("--worker/--no-worker", help="Run an embedded worker.")] = True,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Embedded worker concurrency.")] = 100,
    bootstrap_key: Annotated[
        bool, typer.Option("--bootstrap-key/--no-bootstrap-key", help="Create an admin key if none exists.")
    ] = True,
    tls_cert: Annotated[str | None, typer.Option("--tls-cert", help="Server certificate (PEM): serve HTTPS.")] = None,
    tls_key: Annotated[str | None, typer.Option("--tls-key", help="Server private key (PEM).")] = None,
    tls_client_ca: Annotated[
        str | None, typer.Option("--tls-client-ca", help="CA (PEM) for client certificates: require mutual TLS.")
    ] = None,
    workflows_dir: Annotated[
        Path | None,
        typer.Option("--workflows-dir", envvar="MAESTRO_WORKFLOWS_DIR", help="Folder of workflow YAML files."),
    ] = None,
) -> None:
    """Serve the REST API (and an embedded worker) until SIGINT/SIGTERM."""
    import uvicorn

    from agentmaestro.engine.worker import WorkerConfig
    from agentmaestro.server.app import create_app
    from agentmaestro.server.tls import uvicorn_ssl_options

    c = _ctx(ctx)
    c.local_only("serve")
    ssl_options = uvicorn_ssl_options(tls_cert, tls_key, tls_client_ca)
    sock = listen(host, port)  # a port in use is one error line, before anything is printed or created
    port = int(sock.getsockname()[1])
    scheme = "https" if ssl_options else "http"
    agents = c.agents()
    from agentmaestro.cli.workflows import discover

    workflows = discover(agents, workflows_dir)

    key_file = Path(os.environ.get("MAESTRO_HOME", DEFAULT_HOME)) / BOOTSTRAP_KEY_FILE

    async def prepare(store: Store) -> tuple[str | None, bool]:
        """(a key to show, whether it was just created)."""
        await store.workspaces.ensure(c.workspace)
        if bootstrap_key and await store.keys.count() == 0:
            from agentmaestro.actor import Actor
            from agentmaestro.service import keys

            serve = Actor(name=f"serve:{cli_actor()[4:]}", workspace_id=c.workspace)
            _row, key = await keys.create_key(store, keys.CreateKey(name="bootstrap-admin", role="admin"), serve)
            _save_bootstrap_key(key_file, str(key))
            return str(key), True
        if bootstrap_key and key_file.is_file():  # the key made on first start, if it still works
            saved = key_file.read_text().strip()
            row = await store.keys.verify(saved) if saved else None
            if row is not None and row["workspace_id"] == c.workspace:
                return saved, False
        return None, False

    key, created = _run(_with_store(c, prepare))
    if key and created:
        sys.stderr.write(
            f"created an admin API key for workspace {c.workspace!r} (also saved, readable only by you, "
            f"in {key_file}):\n  {key}\n"
        )
    elif key:
        sys.stderr.write(f"admin API key for workspace {c.workspace!r} (from {key_file}):\n  {key}\n")
    sys.stderr.write(
        f"serving {len(agents)} agent(s) and {len(workflows)} workflow(s) on {scheme}://{host}:{port}"
        f"{' (client certificates required)' if tls_client_ca else ''} (database {redact_url(c.database_url)}; "
        f"embedded worker: {'on' if worker else 'off'})\n"
        f"  dashboard: {scheme}://{host}:{port}/   API docs: {scheme}://{host}:{port}/docs   "
        f"MCP: {scheme}://{host}:{port}/mcp\n"
        + ("" if key else "  sign in with an existing key, or create one: maestro keys create --name me --role admin\n")
    )
    sys.stderr.flush()
    application = create_app(
        c.database_url,
        agents=agents,
        worker=worker,
        worker_config=WorkerConfig(concurrency=concurrency),
        workflow_registry=workflows,
    )
    # Open event streams (SSE) never finish by themselves: give requests 5 s to end on SIGTERM/SIGINT, then
    # cancel them (subscribers resume elsewhere with Last-Event-ID).
    config = uvicorn.Config(application, log_level="warning", lifespan="on", timeout_graceful_shutdown=5, **ssl_options)
    uvicorn.Server(config).run(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one).

    Raises:
        ConfigError: the address is in use or cannot be bound (says what to do instead).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use (another maestro serve?); "
                "choose another with --port N (make run: PORT=N make run)"
            ) from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock
