"""The vector index: Qdrant, embedded in the process (a folder) or a Qdrant server.

Where it lives, first match wins:

1. ``MAESTRO_QDRANT_URL``: ``http(s)://host:6333`` for a Qdrant server (``MAESTRO_QDRANT_API_KEY`` if it
   needs one), ``:memory:`` for an in-process index that vanishes with the process, or a folder path;
2. next to an SQLite database: ``<database folder>/qdrant``;
3. ``$MAESTRO_HOME/qdrant`` (default ``./.maestro/qdrant``).

Embedded (local) mode locks its folder: one process at a time. ``maestro serve`` (API and embedded
worker) is one process; separate ``maestro worker`` processes, or a CLI next to a running server, need a
Qdrant server (``MAESTRO_QDRANT_URL``) or ``--server`` to go through the API. Opening a locked folder is
a :class:`~agentmaestro.errors.ConfigError` that says so.

The client is synchronous and every call runs on one dedicated thread per index, so the event loop never
blocks and local mode's SQLite files are always used from the thread that opened them. One index is
shared by everything in the process that uses the same location.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib
import logging
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from agentmaestro.errors import ConfigError

T = TypeVar("T")
log = logging.getLogger("agentmaestro.knowledge")

_INDEXES: dict[str, VectorIndex] = {}
_INDEXES_LOCK = threading.Lock()


@dataclass(frozen=True, kw_only=True)
class Hit:
    """One search hit: its score and stored payload."""

    score: float
    payload: dict[str, Any]


def default_location(database_url: str | None = None) -> str:
    """Where the index lives for a database (see the module docs)."""
    explicit = os.environ.get("MAESTRO_QDRANT_URL", "").strip()
    if explicit:
        return explicit
    if database_url and database_url.startswith("sqlite") and ":memory:" not in database_url:
        path = database_url.split("///", 1)[-1].split("?", 1)[0]
        if path:
            return str(Path(path).resolve().parent / "qdrant")
    return str(Path(os.environ.get("MAESTRO_HOME", ".maestro")).resolve() / "qdrant")


def index_at(location: str) -> VectorIndex:
    """The process's index at ``location`` (opened on first use, shared afterwards)."""
    key = location if location == ":memory:" or "://" in location else str(Path(location).resolve())
    with _INDEXES_LOCK:
        index = _INDEXES.get(key)
        if index is None:
            if not _INDEXES:
                atexit.register(_close_all)
            index = _INDEXES[key] = VectorIndex(key)
        return index


def _close_all() -> None:
    """Release every index at exit (embedded Qdrant unlocks its folder), while imports still work."""
    for index in list(_INDEXES.values()):
        index.close()


class VectorIndex:
    """Named Qdrant collections of points (vector + payload), cosine distance."""

    def __init__(self, location: str) -> None:
        """Point at ``location`` (server URL, ``:memory:`` or folder); connects on first use."""
        self.location = location
        self.remote = "://" in location
        self._client: Any = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maestro-qdrant")
        # qdrant-client takes seconds to import: start now, on the index's own thread, so no event loop waits for it
        self._thread.submit(_warm_up)

    @property
    def where(self) -> str:
        """The location, with any credentials removed."""
        if not self.remote:
            return self.location
        parts = urlsplit(self.location)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"

    def _open(self) -> Any:
        if self._client is not None:
            return self._client
        try:
            from qdrant_client import QdrantClient
        except ImportError:
            raise ConfigError("knowledge needs qdrant-client: pip install 'agentmaestro[rag]'") from None
        if self.remote:
            api_key = os.environ.get("MAESTRO_QDRANT_API_KEY") or None
            self._client = QdrantClient(url=self.location, api_key=api_key, timeout=30)
        elif self.location == ":memory:":
            self._client = QdrantClient(location=":memory:")
        else:
            try:
                # Every call runs on this index's one thread; the flag only lets close() run at exit from the main one.
                self._client = QdrantClient(path=self.location, force_disable_check_same_thread=True)
            except RuntimeError as exc:
                if "already accessed" not in str(exc):
                    raise
                raise ConfigError(
                    f"the knowledge index {self.location} is in use by another process (embedded Qdrant allows "
                    "one process per folder): use `--server URL` to go through the running server, or run a Qdrant "
                    "server and set MAESTRO_QDRANT_URL for every process"
                ) from None
        return self._client

    def close(self) -> None:
        """Close the client (releasing an embedded folder's lock); the next call opens it again."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing at exit is best effort
                log.debug("closing Qdrant at %s failed", self.where, exc_info=True)

    async def _call(self, fn: Callable[[Any], T]) -> T:
        def run() -> T:
            return fn(self._open())

        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, run)
        except ConfigError:
            raise
        except Exception as exc:
            from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

            if isinstance(exc, UnexpectedResponse | ResponseHandlingException):
                raise ConfigError(f"Qdrant at {self.where} failed: {str(exc).splitlines()[0]}") from exc
            raise

    async def create(self, name: str, dimension: int) -> None:
        """Create a collection (nothing if it exists)."""

        def op(client: Any) -> None:
            from qdrant_client import models

            if not client.collection_exists(name):
                client.create_collection(
                    name, vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE)
                )

        await self._call(op)

    async def drop(self, name: str) -> None:
        """Delete a collection (nothing if it does not exist)."""

        def op(client: Any) -> None:
            if client.collection_exists(name):
                client.delete_collection(name)

        await self._call(op)

    async def upsert(self, name: str, points: list[tuple[str, list[float], dict[str, Any]]]) -> None:
        """Write points ``(id, vector, payload)``; ids are UUID strings."""

        def op(client: Any) -> None:
            from qdrant_client import models

            structs = [models.PointStruct(id=pid, vector=vec, payload=payload) for pid, vec, payload in points]
            for i in range(0, len(structs), 256):
                client.upsert(name, points=structs[i : i + 256], wait=True)

        await self._call(op)

    async def delete_where(self, name: str, must: dict[str, str]) -> None:
        """Delete the points whose payload matches every ``key: value``."""

        def op(client: Any) -> None:
            from qdrant_client import models

            if client.collection_exists(name):
                client.delete(name, points_selector=models.FilterSelector(filter=_filter(must)), wait=True)

        await self._call(op)

    async def search(self, name: str, vector: list[float], k: int, must: dict[str, str]) -> list[Hit]:
        """The ``k`` nearest points whose payload matches every ``key: value``, best first."""

        def op(client: Any) -> list[Hit]:
            if not client.collection_exists(name):
                return []
            result = client.query_points(name, query=vector, query_filter=_filter(must), limit=k, with_payload=True)
            return [Hit(score=float(p.score), payload=dict(p.payload or {})) for p in result.points]

        return await self._call(op)


def _warm_up() -> None:
    try:
        importlib.import_module("qdrant_client")
    except ImportError:  # reported by the first call
        pass


def _filter(must: dict[str, str]) -> Any:
    from qdrant_client import models

    return models.Filter(
        must=[models.FieldCondition(key=k, match=models.MatchValue(value=v)) for k, v in sorted(must.items())]
    )


def point_id(document_id: str, chunk_index: int) -> str:
    """A stable point id for a document's chunk."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"agentmaestro:{document_id}:{chunk_index}"))
