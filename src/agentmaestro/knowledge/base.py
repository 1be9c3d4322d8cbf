"""KnowledgeBase: collections of documents per workspace, chunked, embedded and searched with citations.

Metadata (collections, documents, content hashes, who ingested what) is in the database; vectors are in
Qdrant (:mod:`agentmaestro.knowledge.index`), one Qdrant collection per knowledge collection, and every
search also filters on the workspace, so a workspace never sees another's passages.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agentmaestro.errors import ConflictError, NotFoundError, ValidationError
from agentmaestro.knowledge.chunking import check_text, chunk_text, decode_text
from agentmaestro.knowledge.embedders import DEFAULT_EMBEDDER, Embedder, embedder_for
from agentmaestro.knowledge.index import VectorIndex, default_location, index_at, point_id

if TYPE_CHECKING:
    from agentmaestro.store.base import Store

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_MARKDOWN_SUFFIXES = frozenset({"", ".md", ".markdown", ".mdx"})
MAX_K = 50
"""Most passages one search returns."""
MAX_FILE_BYTES = 20_000_000
"""Largest file ``ingest_paths`` reads."""


@dataclass(frozen=True, kw_only=True)
class Passage:
    """One search result, with what a model needs to cite it."""

    rank: int
    """1-based rank: the ``[n]`` to cite."""
    score: float
    """Cosine similarity to the query (higher is closer)."""
    document_id: str
    """The document's id."""
    source: str
    """The document's source (a file path or the name given with the text)."""
    chunk: int
    """Index of the chunk in its document."""
    start_line: int
    """First line of the passage in the document (1-based)."""
    end_line: int
    """Last line (inclusive)."""
    start: int
    """Character offset of the passage in the document."""
    end: int
    """Offset just past it."""
    heading: str
    """Markdown heading path of the passage, or ``""``."""
    text: str
    """The passage."""

    @property
    def location(self) -> str:
        """``lines 3-9`` (and the heading path when there is one)."""
        lines = (
            f"line {self.start_line}"
            if self.start_line == self.end_line
            else f"lines {self.start_line}-{self.end_line}"
        )
        return f"{lines} ({self.heading})" if self.heading else lines

    def to_json(self) -> dict[str, Any]:
        """The API form: the fields plus ``location`` and ``citation``."""
        return {**asdict(self), "location": self.location, "citation": f"[{self.rank}] {self.source}, {self.location}"}


@dataclass(frozen=True, kw_only=True)
class IngestResult:
    """What happened to one document."""

    document_id: str
    """The document's id."""
    source: str
    """Its source."""
    status: Literal["ingested", "updated", "unchanged"]
    """New, changed (re-chunked and re-embedded) or unchanged (skipped: same content hash)."""
    chunks: int
    """Chunks the document has now."""
    content_hash: str
    """SHA-256 of its text."""

    def to_json(self) -> dict[str, Any]:
        """The API form."""
        return asdict(self)


def check_name(name: str) -> str:
    """A collection name: 1-100 letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(
            f"collection name must be 1-100 letters, digits, '.', '_' or '-' (starting with a letter or digit), "
            f"got {name!r}"
        )
    return name


def format_passages(query: str, collection: str, passages: Sequence[Passage], *, max_chars: int = 1500) -> str:
    """Passages as a model should see them: numbered ``[n]`` with source and location, ready to cite."""
    if not passages:
        return f"No passages in collection {collection!r} match {query!r}."
    parts = [f"{len(passages)} passages from collection {collection!r} for {query!r}. Cite them as [1], [2], ..."]
    for p in passages:
        body = p.text if len(p.text) <= max_chars else p.text[:max_chars] + " [...]"
        parts.append(f"[{p.rank}] {p.source}, {p.location} (score {p.score:.3f})\n{body}")
    return "\n\n".join(parts)


def collect_files(paths: Sequence[Path]) -> list[Path]:
    """The files named, and the files inside the folders named (recursively, without hidden ones), in order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        elif path.is_file():
            files.append(path)
        else:
            raise ValidationError(f"{path}: no such file or folder")
    return files


def read_text_file(path: Path) -> str:
    """A file's text (ValidationError if it is too big, unreadable or binary)."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValidationError(f"{path}: {size} bytes; the limit is {MAX_FILE_BYTES}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}") from None
    return decode_text(data, str(path))


def _qdrant_name(collection_id: str) -> str:
    return f"km_{collection_id}"


class KnowledgeBase:
    """Knowledge collections of every workspace in one database, over one vector index."""

    def __init__(
        self, store: Store, index: VectorIndex | None = None, *, max_chars: int = 1200, overlap_chars: int = 200
    ) -> None:
        """Use ``store`` for metadata and ``index`` for vectors (default: :func:`default_location` of the store).

        Args:
            store: The database.
            index: The vector index (default: the process's index for the store's location).
            max_chars: Chunk size limit in characters.
            overlap_chars: Overlap between consecutive chunks of one section.
        """
        self.store = store
        self._index = index
        self.max_chars = max_chars
        self.overlap_chars = overlap_chars
        self._embedders: dict[str, Embedder] = {}

    @property
    def index(self) -> VectorIndex:
        """The vector index, opened on first use: listing collections or documents never loads qdrant-client."""
        if self._index is None:
            self._index = index_at(default_location(self.store.url))
        return self._index

    def embedder(self, spec: str) -> Embedder:
        """The (cached) embedder for an embedder string."""
        if spec not in self._embedders:
            self._embedders[spec] = embedder_for(spec)
        return self._embedders[spec]

    async def _embed(self, collection: dict[str, Any], texts: list[str]) -> list[list[float]]:
        vectors = await self.embedder(collection["embedder"]).embed(texts)
        for vec in vectors:
            if len(vec) != collection["dimension"]:
                raise ValidationError(
                    f"embedder {collection['embedder']!r} now returns {len(vec)}-dimensional vectors but collection "
                    f"{collection['name']!r} holds {collection['dimension']}-dimensional ones; use the model the "
                    "collection was built with, or create a new collection and ingest again"
                )
        return vectors

    # -------------------------------------------------------------------------------- collections

    async def create_collection(
        self,
        workspace_id: str,
        name: str,
        *,
        embedder: str | None = None,
        description: str = "",
        created_by: str | None = None,
        created_by_run: str | None = None,
    ) -> dict[str, Any]:
        """Create a collection; its dimension is measured by embedding a probe text once.

        Raises:
            ValidationError: a bad name.
            ConflictError: the workspace has a collection of that name.
            ConfigError: an unknown or unusable embedder.
            ModelAPIError: the embeddings endpoint failed.
        """
        check_name(name)
        if len(description) > 2000:
            raise ValidationError("description must be at most 2000 characters")
        spec = (embedder or os.environ.get("MAESTRO_EMBEDDER") or DEFAULT_EMBEDDER).strip()
        if len(spec) > 200:
            raise ValidationError("embedder must be at most 200 characters")
        try:
            await self.store.knowledge.collection(workspace_id, name)
        except NotFoundError:
            pass
        else:
            raise ConflictError(f"knowledge collection {name!r} already exists")
        model = self.embedder(spec)
        [probe] = await model.embed(["dimension probe"])
        await self.store.workspaces.ensure(workspace_id)
        now = time.time()
        return await self.store.knowledge.create_collection(
            {
                "collection_id": uuid.uuid4().hex,
                "workspace_id": workspace_id,
                "name": name,
                "description": description,
                "embedder": model.name,
                "dimension": len(probe),
                "created_by": created_by,
                "created_by_run": created_by_run,
                "created_at": now,
                "updated_at": now,
            }
        )

    async def list_collections(self, workspace_id: str) -> list[dict[str, Any]]:
        """The workspace's collections with document and chunk counts."""
        return await self.store.knowledge.collections(workspace_id)

    async def get_collection(self, workspace_id: str, name: str) -> dict[str, Any]:
        """One collection (NotFoundError if the workspace has none of that name)."""
        return await self.store.knowledge.collection(workspace_id, check_name(name))

    async def delete_collection(self, workspace_id: str, name: str) -> dict[str, Any]:
        """Delete a collection, its documents and its vectors."""
        row = await self.get_collection(workspace_id, name)
        await self.index.drop(_qdrant_name(row["collection_id"]))
        return await self.store.knowledge.delete_collection(workspace_id, name)

    # ---------------------------------------------------------------------------------- documents

    async def ingest_text(
        self,
        workspace_id: str,
        collection: str,
        source: str,
        text: str,
        *,
        created_by: str | None = None,
        created_by_run: str | None = None,
    ) -> IngestResult:
        """Chunk, embed and index a text under ``source``; skipped when ``source`` holds the same text already.

        A changed text replaces the document's previous chunks.
        """
        if not source or len(source) > 1000 or "\x00" in source:
            raise ValidationError("source must be 1-1000 characters")
        coll = await self.get_collection(workspace_id, collection)
        check_text(text, source)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        existing = await self.store.knowledge.document_by_source(workspace_id, coll["collection_id"], source)
        if existing is not None and existing["content_hash"] == digest:
            return IngestResult(
                document_id=existing["document_id"],
                source=source,
                status="unchanged",
                chunks=existing["chunk_count"],
                content_hash=digest,
            )
        markdown = Path(source).suffix.lower() in _MARKDOWN_SUFFIXES
        chunks = await asyncio.to_thread(
            chunk_text, text, max_chars=self.max_chars, overlap_chars=self.overlap_chars, markdown=markdown
        )
        vectors = await self._embed(coll, [f"{c.heading}\n{c.text}" if c.heading else c.text for c in chunks])
        document_id = existing["document_id"] if existing is not None else f"doc_{uuid.uuid4().hex[:20]}"
        qname = _qdrant_name(coll["collection_id"])
        await self.index.create(qname, coll["dimension"])
        if existing is not None:
            await self.index.delete_where(qname, {"document_id": document_id})
        await self.index.upsert(
            qname,
            [
                (
                    point_id(document_id, c.index),
                    vec,
                    {
                        "workspace_id": workspace_id,
                        "collection_id": coll["collection_id"],
                        "document_id": document_id,
                        "source": source,
                        "chunk": c.index,
                        "text": c.text,
                        "start": c.start,
                        "end": c.end,
                        "start_line": c.start_line,
                        "end_line": c.end_line,
                        "heading": c.heading,
                    },
                )
                for c, vec in zip(chunks, vectors, strict=True)
            ],
        )
        now = time.time()
        await self.store.knowledge.put_document(
            {
                "document_id": document_id,
                "workspace_id": workspace_id,
                "collection_id": coll["collection_id"],
                "source": source,
                "content_hash": digest,
                "chars": len(text),
                "chunk_count": len(chunks),
                "created_by": created_by,
                "created_by_run": created_by_run,
                "created_at": now,
                "updated_at": now,
            }
        )
        return IngestResult(
            document_id=document_id,
            source=source,
            status="updated" if existing is not None else "ingested",
            chunks=len(chunks),
            content_hash=digest,
        )

    async def ingest_bytes(
        self, workspace_id: str, collection: str, source: str, data: bytes, *, created_by: str | None = None
    ) -> IngestResult:
        """Ingest a file's bytes (UTF-8 text; binary content is refused with a ValidationError)."""
        return await self.ingest_text(
            workspace_id, collection, source, decode_text(data, source), created_by=created_by
        )

    async def ingest_paths(
        self, workspace_id: str, collection: str, paths: Sequence[Path], *, created_by: str | None = None
    ) -> list[IngestResult]:
        """Ingest files, and the files in folders (recursively, skipping hidden ones); each under its path.

        Every file is checked (exists, is text) before any is ingested.
        """
        await self.get_collection(workspace_id, collection)
        files = collect_files(paths)
        loaded = [(str(f), read_text_file(f)) for f in files]
        return [
            await self.ingest_text(workspace_id, collection, source, text, created_by=created_by)
            for source, text in loaded
        ]

    async def list_documents(self, workspace_id: str, collection: str) -> list[dict[str, Any]]:
        """Documents of a collection."""
        coll = await self.get_collection(workspace_id, collection)
        return await self.store.knowledge.documents(workspace_id, coll["collection_id"])

    async def delete_document(self, workspace_id: str, collection: str, document_id: str) -> dict[str, Any]:
        """Delete a document and its vectors."""
        coll = await self.get_collection(workspace_id, collection)
        row = await self.store.knowledge.delete_document(workspace_id, coll["collection_id"], document_id)
        await self.index.delete_where(_qdrant_name(coll["collection_id"]), {"document_id": document_id})
        return row

    # ------------------------------------------------------------------------------------- search

    async def search(self, workspace_id: str, collection: str, query: str, *, k: int = 5) -> list[Passage]:
        """The ``k`` passages closest to ``query``, best first, numbered for citation."""
        if not query or not query.strip() or len(query) > 10_000:
            raise ValidationError("query must be 1-10000 characters")
        if not 1 <= k <= MAX_K:
            raise ValidationError(f"k must be 1-{MAX_K}, got {k}")
        coll = await self.get_collection(workspace_id, collection)
        [vector] = await self._embed(coll, [query])
        if not coll["documents"]:
            return []
        hits = await self.index.search(
            _qdrant_name(coll["collection_id"]),
            vector,
            k,
            {"workspace_id": workspace_id, "collection_id": coll["collection_id"]},
        )
        return [
            Passage(
                rank=i,
                score=round(h.score, 6),
                document_id=str(h.payload["document_id"]),
                source=str(h.payload["source"]),
                chunk=int(h.payload["chunk"]),
                start_line=int(h.payload["start_line"]),
                end_line=int(h.payload["end_line"]),
                start=int(h.payload["start"]),
                end=int(h.payload["end"]),
                heading=str(h.payload.get("heading") or ""),
                text=str(h.payload["text"]),
            )
            for i, h in enumerate(hits, start=1)
        ]


_BASES: weakref.WeakKeyDictionary[Store, KnowledgeBase] = weakref.WeakKeyDictionary()


def knowledge_for(store: Store) -> KnowledgeBase:
    """The process's KnowledgeBase for a store (created on first use, with the default index location)."""
    kb = _BASES.get(store)
    if kb is None:
        kb = _BASES[store] = KnowledgeBase(store)
    return kb


def use_knowledge(store: Store, kb: KnowledgeBase) -> None:
    """Make ``kb`` the KnowledgeBase that tools, the API and the CLI use for ``store`` (e.g. another index)."""
    _BASES[store] = kb
