"""Knowledge (RAG): chunking with citations, ingest/search over SQLite and PostgreSQL metadata, strict workspace
isolation, unchanged files skipped, dimension mismatches refused, and the search_knowledge tool inside a run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentmaestro import Agent, ScriptedModel
from agentmaestro.agents import AgentRegistry
from agentmaestro.core.states import RunStatus
from agentmaestro.engine.worker import Worker, WorkerConfig
from agentmaestro.errors import ConfigError, ConflictError, NotFoundError, ValidationError
from agentmaestro.knowledge import KnowledgeBase, MiniLMEmbedder, VectorIndex, chunk_text, decode_text
from agentmaestro.knowledge.index import default_location
from agentmaestro.store.base import Store
from agentmaestro.store.records import NewRun, new_run_id
from agentmaestro.tools.builtin.knowledge import add_knowledge, search_knowledge
from tests.fakes.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.anyio

GUIDE = """# Acme handbook

Welcome to the Acme handbook. It covers our policies.

## Refunds

Customers may request a refund within 30 days of purchase.
Refunds go back to the original payment method.

## Shipping

Orders ship from Rotterdam. Delivery to Europe takes three business days.

## Security

Passwords rotate every ninety days and hardware keys are mandatory for admins.
"""

FAQ = """Frequently asked questions.

Can I pay with a gift card? Yes, gift cards work for every order.

Do you sell replacement batteries? Only for the Model K lantern.
"""


@pytest.fixture
async def kb(db_url: str) -> AsyncIterator[KnowledgeBase]:
    store = Store.open(db_url)
    try:
        yield KnowledgeBase(store, VectorIndex(":memory:"), max_chars=300, overlap_chars=60)
    finally:
        await store.close()


def test_chunks_follow_headings_and_keep_exact_offsets() -> None:
    chunks = chunk_text(GUIDE, max_chars=300, overlap_chars=60)
    assert [c.heading for c in chunks] == [
        "Acme handbook",
        "Acme handbook > Refunds",
        "Acme handbook > Shipping",
        "Acme handbook > Security",
    ]
    lines = GUIDE.splitlines()
    for c in chunks:
        assert GUIDE[c.start : c.end] == c.text
        assert lines[c.start_line - 1] in c.text.splitlines()[0]
        assert c.text.splitlines()[-1] == lines[c.end_line - 1]
    refunds = chunks[1]
    assert (refunds.start_line, refunds.end_line) == (5, 8)


def test_long_sections_are_split_with_overlap() -> None:
    paragraphs = [f"Paragraph {i} " + "word " * 30 for i in range(8)]
    text = "\n\n".join(paragraphs)
    chunks = chunk_text(text, max_chars=400, overlap_chars=200, markdown=False)
    assert len(chunks) > 2
    assert all(len(c.text) <= 400 for c in chunks)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start < a.end, "consecutive chunks overlap"
    one_huge = chunk_text("x" * 1000, max_chars=300, overlap_chars=0, markdown=False)
    assert "".join(c.text for c in one_huge) == "x" * 1000


def test_binary_is_refused() -> None:
    with pytest.raises(ValidationError, match="binary"):
        decode_text(b"%PDF-1.7\x00\x01\x02", "report.pdf")
    with pytest.raises(ValidationError, match="not UTF-8"):
        decode_text(b"\xff\xfe\xfa caf\xe9", "latin1.txt")
    assert decode_text("\ufeffhello".encode(), "bom.txt") == "hello"


async def test_ingest_search_cite_skip_and_isolate(kb: KnowledgeBase, tmp_path: Path) -> None:
    coll = await kb.create_collection("default", "handbook", embedder="lexical", created_by="cli:test")
    assert (coll["embedder"], coll["dimension"], coll["documents"]) == ("lexical", 1024, 0)
    docs_dir = tmp_path / "docs"
    docs_dir.mkdir()
    (docs_dir / "guide.md").write_text(GUIDE, encoding="utf-8")
    (docs_dir / "faq.txt").write_text(FAQ, encoding="utf-8")
    (docs_dir / ".hidden.md").write_text("secret", encoding="utf-8")
    first = await kb.ingest_paths("default", "handbook", [docs_dir], created_by="cli:test")
    assert [(Path(r.source).name, r.status) for r in first] == [("faq.txt", "ingested"), ("guide.md", "ingested")]

    passages = await kb.search("default", "handbook", "how many days for a refund?", k=3)
    top = passages[0]
    assert Path(top.source).name == "guide.md" and "refund within 30 days" in top.text
    assert (top.rank, top.start_line, top.end_line, top.heading) == (1, 5, 8, "Acme handbook > Refunds")
    assert top.to_json()["citation"].endswith("guide.md, lines 5-8 (Acme handbook > Refunds)")
    assert [p.rank for p in passages] == [1, 2, 3] and passages[0].score >= passages[1].score
    battery = await kb.search("default", "handbook", "replacement batteries lantern", k=1)
    assert Path(battery[0].source).name == "faq.txt"

    again = await kb.ingest_paths("default", "handbook", [docs_dir])
    assert [r.status for r in again] == ["unchanged", "unchanged"]
    (docs_dir / "faq.txt").write_text(FAQ + "\nWe also sell spare wicks.\n", encoding="utf-8")
    changed = await kb.ingest_paths("default", "handbook", [docs_dir / "faq.txt"])
    assert changed[0].status == "updated" and changed[0].document_id == first[0].document_id
    docs = await kb.list_documents("default", "handbook")
    assert len(docs) == 2 and {d["created_by"] for d in docs} == {"cli:test", None}
    assert (await kb.get_collection("default", "handbook"))["documents"] == 2

    # another workspace: nothing to see, nothing to touch
    await kb.store.workspaces.ensure("other")
    assert await kb.list_collections("other") == []
    for call in (
        kb.search("other", "handbook", "refund"),
        kb.get_collection("other", "handbook"),
        kb.list_documents("other", "handbook"),
        kb.delete_document("other", "handbook", first[0].document_id),
        kb.delete_collection("other", "handbook"),
    ):
        with pytest.raises(NotFoundError):
            await call
    await kb.create_collection("other", "handbook", embedder="lexical")
    assert await kb.search("other", "handbook", "refund within 30 days") == []
    assert len(await kb.search("default", "handbook", "refund", k=10)) >= 4

    with pytest.raises(ConflictError):
        await kb.create_collection("default", "handbook", embedder="lexical")
    gone = await kb.delete_document("default", "handbook", first[0].document_id)
    assert Path(gone["source"]).name == "faq.txt"
    assert all(Path(p.source).name == "guide.md" for p in await kb.search("default", "handbook", "batteries", k=10))
    await kb.delete_collection("default", "handbook")
    with pytest.raises(NotFoundError):
        await kb.search("default", "handbook", "refund")


async def test_bad_input_is_a_clear_error(kb: KnowledgeBase, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="collection name"):
        await kb.create_collection("default", "../etc", embedder="lexical")
    with pytest.raises(ConfigError, match="unknown embedder"):
        await kb.create_collection("default", "x", embedder="word2vec:big")
    await kb.create_collection("default", "x", embedder="lexical:64")
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ValidationError, match="binary"):
        await kb.ingest_paths("default", "x", [tmp_path / "logo.png"])
    with pytest.raises(ValidationError, match="no such file"):
        await kb.ingest_paths("default", "x", [tmp_path / "missing.md"])
    with pytest.raises(ValidationError, match="empty"):
        await kb.ingest_text("default", "x", "blank.md", "  \n\n ")
    with pytest.raises(ValidationError, match="k must be"):
        await kb.search("default", "x", "q", k=0)
    assert await kb.list_documents("default", "x") == []
    # two requests racing for one name: one collection, one ConflictError (never a database error)
    results = await asyncio.gather(
        kb.create_collection("default", "race", embedder="lexical"),
        kb.create_collection("default", "race", embedder="lexical"),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["ConflictError", "dict"]


async def test_openai_embeddings_and_dimension_mismatch(kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        coll = await kb.create_collection("default", "api", embedder="openai:text-embedding-3-small")
        assert (coll["embedder"], coll["dimension"]) == ("openai:text-embedding-3-small", 64)
        await kb.ingest_text("default", "api", "guide.md", GUIDE)
        top = (await kb.search("default", "api", "shipping delivery Europe Rotterdam", k=1))[0]
        assert top.heading == "Acme handbook > Shipping"
        assert server.embedding_requests[-1]["model"] == "text-embedding-3-small"
        server.embedding_dim = 32  # the endpoint now serves another model behind the same name
        with pytest.raises(ValidationError, match="32-dimensional vectors but collection 'api' holds 64"):
            await kb.search("default", "api", "shipping")
        with pytest.raises(ValidationError, match="dimensional"):
            await kb.ingest_text("default", "api", "new.md", "A new document.")


async def test_local_index_is_one_process_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAESTRO_QDRANT_URL", raising=False)
    assert default_location(f"sqlite:///{tmp_path}/m.db") == str(tmp_path.resolve() / "qdrant")
    monkeypatch.setenv("MAESTRO_QDRANT_URL", ":memory:")
    assert default_location(f"sqlite:///{tmp_path}/m.db") == ":memory:"
    first = VectorIndex(str(tmp_path / "q"))
    await first.create("c", 8)
    second = VectorIndex(str(tmp_path / "q"))  # as another process would
    with pytest.raises(ConfigError, match="in use by another process.*MAESTRO_QDRANT_URL"):
        await second.create("c", 8)


def test_local_minilm_embedder() -> None:
    reason = MiniLMEmbedder.available()
    if reason:
        pytest.skip(f"local:all-minilm-l6-v2 needs the embeddings-local extra (PyTorch): {reason}")
    [a, b, c] = asyncio.run(MiniLMEmbedder().embed(["a cat sits on the mat", "a kitten on a rug", "tax law"]))
    assert len(a) == 384
    assert sum(x * y for x, y in zip(a, b, strict=True)) > sum(x * y for x, y in zip(a, c, strict=True))


async def _run(store: Store, agent: Agent, workspace: str) -> Any:
    await store.workspaces.ensure(workspace)
    [rec] = await store.runs.create(
        [
            NewRun(
                run_id=new_run_id(),
                workspace_id=workspace,
                agent_name=agent.name,
                input="x",
                spec=agent.spec(),
                policy={},
            )
        ]
    )
    worker = Worker(store, AgentRegistry([agent]), config=WorkerConfig(poll_interval_s=0.05))
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(20):
            while not (await store.runs.get(rec.run_id)).status.terminal:
                await store.events.wait(None, 0.1)
    finally:
        worker.stop()
        await task
    return await store.runs.get(rec.run_id)


async def test_search_knowledge_tool_in_a_run(db_url: str) -> None:
    from agentmaestro.knowledge import use_knowledge

    store = Store.open(db_url)
    try:
        kb = KnowledgeBase(store, VectorIndex(":memory:"), max_chars=300, overlap_chars=60)
        use_knowledge(store, kb)
        await kb.create_collection("default", "handbook", embedder="lexical")
        await kb.ingest_text("default", "handbook", "guide.md", GUIDE)
        turns = [
            {
                "tool_calls": [
                    {
                        "name": "search_knowledge",
                        "arguments": {"query": "admin hardware keys", "collection": "handbook", "k": 2},
                    }
                ]
            },
            {"content": "{{last_tool_result}}"},
        ]
        agent = Agent(name="researcher", model=ScriptedModel(turns), tools=[search_knowledge])
        run = await _run(store, agent, "default")
        assert run.status is RunStatus.COMPLETED, run.state.error
        out = run.state.output
        assert "Cite them as [1], [2]" in out
        assert "[1] guide.md, lines 14-16 (Acme handbook > Security)" in out and "hardware keys" in out
        # the same agent in another workspace finds no such collection
        other = Agent(name="researcher", model=ScriptedModel(turns), tools=[search_knowledge])
        run = await _run(store, other, "other")
        events = await store.events.read(run.run_id)
        results = [str(e.payload.get("result")) for e in events if e.payload.get("name") == "search_knowledge"]
        assert results and "no knowledge collection 'handbook'; available: none" in results[0]
        assert "hardware" not in str(run.state.output)
    finally:
        await store.close()


async def test_add_knowledge_tool_records_its_run(db_url: str) -> None:
    from agentmaestro.knowledge import use_knowledge

    store = Store.open(db_url)
    try:
        kb = KnowledgeBase(store, VectorIndex(":memory:"))
        use_knowledge(store, kb)
        await kb.create_collection("default", "notes", embedder="lexical")
        note = {"collection": "notes", "source": "notes/q3.md", "text": "# Q3\n\nThe Q3 launch moved to October."}
        turns = [
            {"tool_calls": [{"name": "add_knowledge", "arguments": note}]},
            {"tool_calls": [{"name": "add_knowledge", "arguments": note}]},
            {"content": "{{last_tool_result}}"},
        ]
        agent = Agent(name="scribe", model=ScriptedModel(turns), tools=[add_knowledge])
        run = await _run(store, agent, "default")
        assert run.status is RunStatus.COMPLETED, run.state.error
        assert run.state.output == "unchanged 'notes/q3.md' in 'notes' (1 chunks)"
        [doc] = await kb.list_documents("default", "notes")
        assert (doc["created_by"], doc["created_by_run"]) == ("agent:scribe", run.run_id)
        assert (await kb.search("default", "notes", "when is the Q3 launch"))[0].source == "notes/q3.md"
        assert add_knowledge.risk.name == "ELEVATED" and search_knowledge.risk.name == "SAFE"
    finally:
        await store.close()
