"""The ``maestro`` command line.

Every command takes ``--database-url`` (or ``MAESTRO_DATABASE_URL``; default: an SQLite file under
``./.maestro/``) and ``--workspace``; or ``--server URL --api-key KEY`` (``MAESTRO_SERVER``,
``MAESTRO_API_KEY``) to work through a server's REST API instead (see ``service/plane/``). Agents
come from ``--agents-dir`` (or ``MAESTRO_AGENTS_DIR``, default ``./agents`` when it exists) plus the
built-in demo agents. Errors print one line on stderr and exit non-zero (2 for a command that
cannot work through a server).
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from agentmaestro.cli._common import app
from agentmaestro.errors import LocalOnlyError, MaestroError, one_line

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; any error becomes one line on stderr and a non-zero exit."""
    logging.basicConfig(
        level=os.environ.get("MAESTRO_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s"
    )
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="maestro", standalone_mode=False)
    except LocalOnlyError as exc:  # e.g. `maestro --server URL worker`
        sys.stderr.write(f"error: {one_line(exc)}\n")
        code = 2
    except MaestroError as exc:
        sys.stderr.write(f"error: {one_line(exc)}\n")
        code = 1
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:
        name = type(exc).__name__
        if name == "Exit":  # typer/click Exit carries the exit code
            code = getattr(exc, "exit_code", 0)
        elif name == "Abort":
            sys.stderr.write("error: aborted\n")
            code = 130
        elif hasattr(exc, "format_message"):  # click usage errors (typer vendors click)
            sys.stderr.write(f"error: {exc.format_message()}\n")
            code = int(getattr(exc, "exit_code", 2))
        else:  # never a stack trace for users; MAESTRO_DEBUG=1 shows it
            if os.environ.get("MAESTRO_DEBUG"):
                raise
            first = str(exc).splitlines()[0] if str(exc) else ""
            sys.stderr.write(f"error: unexpected {name}: {first}\n")
            code = 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
