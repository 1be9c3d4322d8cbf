"""/v1/knowledge: the caller's workspace's knowledge collections, their documents, and search with citations."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentmaestro.errors import ValidationError
from agentmaestro.knowledge.base import KnowledgeBase, knowledge_for
from agentmaestro.server.auth import Operator, Viewer, get_store
from agentmaestro.server.provider_access import ProviderAccess
from agentmaestro.store.base import Store

router = APIRouter(prefix="/v1/knowledge", tags=["knowledge"])

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
CollectionName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=100, description="The collection's name.")]
DocumentId = Annotated[str, Path(max_length=64, description="The document's id.")]


def get_knowledge(store: Annotated[Store, Depends(get_store)]) -> KnowledgeBase:
    """The KnowledgeBase of the server's store."""
    return knowledge_for(store)


KB = Annotated[KnowledgeBase, Depends(get_knowledge)]


class CollectionCreate(BaseModel):
    """A new collection."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN, max_length=100, description="Unique in the workspace.")
    embedder: str | None = Field(
        None,
        max_length=200,
        description="openai:MODEL, ollama:MODEL, openrouter:MODEL, local:all-minilm-l6-v2 or lexical[:DIM]; "
        "default: the server's MAESTRO_EMBEDDER or openai:text-embedding-3-small.",
    )
    description: str = Field("", max_length=2000)


class Collection(BaseModel):
    """A knowledge collection."""

    collection_id: str
    workspace_id: str
    name: str
    description: str
    embedder: str = Field(description="The embedder every document and query of the collection uses.")
    dimension: int = Field(description="Length of its vectors.")
    documents: int
    chunks: int
    created_by: str | None
    created_by_run: str | None
    created_at: float
    updated_at: float


class DocumentIngest(BaseModel):
    """One document: its text, or a file's bytes in base64 (UTF-8 text files only; binary is refused)."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1, max_length=1000, description="File path or name; the citation shows it.")
    text: str | None = Field(None, max_length=5_000_000)
    content_base64: str | None = Field(None, max_length=27_000_000, description="A file's bytes, base64.")

    @model_validator(mode="after")
    def _one_of(self) -> DocumentIngest:
        if (self.text is None) == (self.content_base64 is None):
            raise ValueError("give exactly one of text and content_base64")
        return self


class IngestResult(BaseModel):
    """What happened to the document."""

    document_id: str
    source: str
    status: Literal["ingested", "updated", "unchanged"] = Field(
        description="unchanged: the same text was ingested before under this source, so nothing was done."
    )
    chunks: int
    content_hash: str


class Document(BaseModel):
    """A document of a collection."""

    document_id: str
    workspace_id: str
    source: str
    content_hash: str = Field(description="SHA-256 of the text.")
    chars: int
    chunk_count: int
    created_by: str | None
    created_by_run: str | None
    created_at: float
    updated_at: float


class SearchRequest(BaseModel):
    """A search."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=10_000)
    k: int = Field(5, ge=1, le=50, description="How many passages.")


class PassageOut(BaseModel):
    """A passage, with what it takes to cite it."""

    rank: int = Field(description="Cite as [rank].")
    score: float
    document_id: str
    source: str
    chunk: int
    start_line: int
    end_line: int
    start: int = Field(description="Character offset in the document.")
    end: int
    heading: str
    location: str = Field(description="e.g. 'lines 12-20 (Install > Linux)'.")
    citation: str = Field(description="e.g. '[1] guide.md, lines 12-20 (Install)'.")
    text: str


class SearchResult(BaseModel):
    """Passages closest to the query, best first."""

    collection: str
    query: str
    passages: list[PassageOut]


def _collection(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in Collection.model_fields}


def _document(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in Document.model_fields}


@router.get("/collections", response_model=list[Collection], summary="List knowledge collections")
async def list_collections(principal: Viewer, kb: KB) -> list[dict[str, Any]]:
    """The workspace's collections with their embedder, dimension and document and chunk counts."""
    return [_collection(r) for r in await kb.list_collections(principal.workspace_id)]


@router.post("/collections", response_model=Collection, status_code=201, summary="Create a knowledge collection")
async def create_collection(principal: Operator, kb: KB, body: CollectionCreate) -> dict[str, Any]:
    """Create a collection; the embedder is called once to measure the vector dimension.

    The embedder named must be open to API callers (``MAESTRO_ALLOWED_PROVIDERS``, and no endpoint on the server's
    own machine or network unless ``MAESTRO_API_LOOPBACK_PROVIDERS=1``); without one, the operator's default is used.
    """
    if body.embedder is not None:
        await ProviderAccess.from_env().check_embedder(body.embedder)
    row = await kb.create_collection(
        principal.workspace_id,
        body.name,
        embedder=body.embedder,
        description=body.description,
        created_by=principal.actor,
    )
    return _collection(row)


@router.get("/collections/{collection}", response_model=Collection, summary="Get a knowledge collection")
async def get_collection(principal: Viewer, kb: KB, collection: CollectionName) -> dict[str, Any]:
    """One collection."""
    return _collection(await kb.get_collection(principal.workspace_id, collection))


@router.get(
    "/collections/{collection}/documents", response_model=list[Document], summary="List a collection's documents"
)
async def list_documents(principal: Viewer, kb: KB, collection: CollectionName) -> list[dict[str, Any]]:
    """Documents with their content hash, chunk count and who ingested them."""
    return [_document(r) for r in await kb.list_documents(principal.workspace_id, collection)]


@router.post(
    "/collections/{collection}/documents",
    response_model=IngestResult,
    status_code=201,
    summary="Ingest a document",
    responses={200: {"model": IngestResult, "description": "Unchanged: already ingested with the same content"}},
)
async def ingest_document(
    principal: Operator, kb: KB, collection: CollectionName, body: DocumentIngest, response: Response
) -> dict[str, Any]:
    """Chunk, embed and index a text or an uploaded text file.

    Unchanged content under the same source is skipped (status ``unchanged``, HTTP 200); changed content replaces
    the document's chunks (``updated``).
    """
    if body.content_base64 is not None:
        try:
            data = base64.b64decode(body.content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError("content_base64 is not valid base64") from None
        result = await kb.ingest_bytes(
            principal.workspace_id, collection, body.source, data, created_by=principal.actor
        )
    else:
        assert body.text is not None
        result = await kb.ingest_text(
            principal.workspace_id, collection, body.source, body.text, created_by=principal.actor
        )
    if result.status == "unchanged":
        response.status_code = 200
    return result.to_json()


@router.post(
    "/collections/{collection}/search",
    response_model=SearchResult,
    summary="Search a collection",
    responses={200: {"description": "Passages, best first"}},
)
async def search(principal: Viewer, kb: KB, collection: CollectionName, body: SearchRequest) -> dict[str, Any]:
    """The passages closest to the query, numbered for citation ``[1]``, ``[2]``, ..."""
    passages = await kb.search(principal.workspace_id, collection, body.query, k=body.k)
    return {"collection": collection, "query": body.query, "passages": [p.to_json() for p in passages]}


@router.delete(
    "/collections/{collection}/documents/{document_id}", response_model=Document, summary="Delete a document"
)
async def delete_document(
    principal: Operator, kb: KB, collection: CollectionName, document_id: DocumentId
) -> dict[str, Any]:
    """Delete a document and its vectors."""
    return _document(await kb.delete_document(principal.workspace_id, collection, document_id))


@router.delete("/collections/{collection}", response_model=Collection, summary="Delete a knowledge collection")
async def delete_collection(principal: Operator, kb: KB, collection: CollectionName) -> dict[str, Any]:
    """Delete a collection with its documents and vectors."""
    return _collection(await kb.delete_collection(principal.workspace_id, collection))
