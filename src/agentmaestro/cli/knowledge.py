"""``maestro knowledge create|list|ingest|search|rm``: knowledge collections, locally or through ``--server``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agentmaestro.cli._common import _ctx, _print_json, app, out
from agentmaestro.errors import ConfigError
from agentmaestro.service.plane import Plane
from agentmaestro.service.plane.local import LocalPlane
from agentmaestro.service.plane.remote import RemotePlane

knowledge_app = typer.Typer(
    help="Knowledge collections (RAG): ingest text files, search them with citations (docs/knowledge.md).",
    no_args_is_help=True,
)
app.add_typer(knowledge_app, name="knowledge")

JSON = dict[str, Any]


def _local(b: Plane) -> tuple[Any, str, str]:
    """(KnowledgeBase, workspace, actor) of a local backend."""
    from agentmaestro.cli._common import cli_actor
    from agentmaestro.knowledge.base import knowledge_for

    assert isinstance(b, LocalPlane)
    return knowledge_for(b.store), b.workspace, cli_actor()


def _remote(b: Plane) -> Any:
    if not isinstance(b, RemotePlane):
        raise ConfigError("unexpected backend")
    return b.client


@knowledge_app.command("create")
def knowledge_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Collection name (letters, digits, . _ -).")],
    embedder: Annotated[
        str | None,
        typer.Option(
            "--embedder",
            "-e",
            help="openai:MODEL, ollama:MODEL, openrouter:MODEL, local:all-minilm-l6-v2 or lexical "
            "(default: MAESTRO_EMBEDDER or openai:text-embedding-3-small).",
        ),
    ] = None,
    description: Annotated[str, typer.Option("--description", "-d", help="What the collection holds.")] = "",
) -> None:
    """Create a knowledge collection."""
    c = _ctx(ctx)

    async def go(b: Plane) -> JSON:
        if isinstance(b, RemotePlane):
            row: JSON = await _remote(b).create_knowledge_collection(name, embedder=embedder, description=description)
            return row
        kb, ws, actor = _local(b)
        row = await kb.create_collection(ws, name, embedder=embedder, description=description, created_by=actor)
        return {k: v for k, v in row.items()}

    row = c.call(go)
    if c.as_json:
        _print_json(row)
    else:
        out.print(f"created {row['name']} (embedder {row['embedder']}, {row['dimension']} dimensions)", markup=False)


@knowledge_app.command("list")
def knowledge_list(
    ctx: typer.Context,
    collection: Annotated[
        str | None, typer.Argument(help="A collection: list its documents (default: list the collections).")
    ] = None,
) -> None:
    """List the workspace's collections, or one collection's documents."""
    c = _ctx(ctx)

    async def go(b: Plane) -> list[JSON]:
        if isinstance(b, RemotePlane):
            client = _remote(b)
            rows: list[JSON] = await (
                client.list_knowledge_documents(collection) if collection else client.list_knowledge_collections()
            )
            return rows
        kb, ws, _ = _local(b)
        return list(await (kb.list_documents(ws, collection) if collection else kb.list_collections(ws)))

    rows = c.call(go)
    if c.as_json:
        _print_json(rows)
        return
    if collection:
        table = Table("document_id", "source", "chunks", "chars", "sha256", "by")
        for r in rows:
            table.add_row(
                r["document_id"],
                r["source"],
                str(r["chunk_count"]),
                str(r["chars"]),
                r["content_hash"][:12],
                r["created_by"] or "",
            )
    else:
        table = Table("name", "embedder", "dim", "documents", "chunks", "description")
        for r in rows:
            table.add_row(
                r["name"], r["embedder"], str(r["dimension"]), str(r["documents"]), str(r["chunks"]), r["description"]
            )
    out.print(table)


@knowledge_app.command("ingest")
def knowledge_ingest(
    ctx: typer.Context,
    collection: Annotated[str, typer.Argument(help="The collection.")],
    paths: Annotated[list[Path], typer.Argument(help="Text files (txt, md, ...) or folders (read recursively).")],
) -> None:
    """Ingest text files; an unchanged file (same content hash as last time) is skipped."""
    from agentmaestro.knowledge.base import collect_files, read_text_file

    c = _ctx(ctx)

    async def go(b: Plane) -> list[JSON]:
        if isinstance(b, RemotePlane):
            files = collect_files(paths)
            texts = [(str(f), read_text_file(f)) for f in files]  # refuse binary before sending anything
            client = _remote(b)
            return [await client.ingest_knowledge(collection, source, text=text) for source, text in texts]
        kb, ws, actor = _local(b)
        return [r.to_json() for r in await kb.ingest_paths(ws, collection, paths, created_by=actor)]

    results = c.call(go)
    if c.as_json:
        _print_json(results)
        return
    for r in results:
        out.print(f"{r['status']:<9} {r['source']} ({r['chunks']} chunks) {r['document_id']}", markup=False)


@knowledge_app.command("search")
def knowledge_search(
    ctx: typer.Context,
    collection: Annotated[str, typer.Argument(help="The collection.")],
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int, typer.Option("-k", "--top", min=1, max=50, help="How many passages.")] = 5,
) -> None:
    """Search a collection: passages best first, each with its citation (source, lines, heading) and score."""
    c = _ctx(ctx)

    async def go(b: Plane) -> list[JSON]:
        if isinstance(b, RemotePlane):
            answer: JSON = await _remote(b).search_knowledge(collection, query, k=k)
            return list(answer["passages"])
        kb, ws, _ = _local(b)
        return [p.to_json() for p in await kb.search(ws, collection, query, k=k)]

    passages = c.call(go)
    if c.as_json:
        _print_json(passages)
        return
    if not passages:
        out.print("no passages", markup=False)
    for p in passages:
        out.print(f"{p['citation']}  score={p['score']:.3f}", markup=False)
        out.print("    " + p["text"].strip().replace("\n", "\n    "), markup=False)


@knowledge_app.command("rm")
def knowledge_rm(
    ctx: typer.Context,
    collection: Annotated[str, typer.Argument(help="The collection.")],
    document: Annotated[
        str | None, typer.Option("--document", help="Delete only this document (its id) instead of the collection.")
    ] = None,
) -> None:
    """Delete a collection with its documents and vectors, or one document."""
    c = _ctx(ctx)

    async def go(b: Plane) -> JSON:
        if isinstance(b, RemotePlane):
            client = _remote(b)
            row: JSON = await (
                client.delete_knowledge_document(collection, document)
                if document
                else client.delete_knowledge_collection(collection)
            )
            return row
        kb, ws, _ = _local(b)
        return dict(
            await (kb.delete_document(ws, collection, document) if document else kb.delete_collection(ws, collection))
        )

    row = c.call(go)
    if c.as_json:
        _print_json(row)
    elif document:
        out.print(f"deleted document {row['document_id']} ({row['source']}) from {collection}", markup=False)
    else:
        out.print(f"deleted collection {row['name']} ({row['documents']} documents)", markup=False)
