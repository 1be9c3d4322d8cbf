"""Knowledge over HTTP: the /v1/knowledge API with the Python client, and ``maestro knowledge`` through
``--server``; SQLite and PostgreSQL metadata, the embedded Qdrant index held by the server process."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentmaestro.agents import AgentRegistry
from agentmaestro.client import Client
from agentmaestro.errors import AuthError, ConfigError, ConflictError, NotFoundError, ValidationError
from tests.e2e.test_server import auth, make_key
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.server import LiveServer

MAESTRO = Path(sys.executable).parent / "maestro"

GUIDE = """# Field guide

## Tents

Pitch the tent on flat ground and face the door away from the wind.

## Water

Boil stream water for one minute, or use a ceramic filter rated to 0.2 microns.

## Fire

Build fires only in existing rings and drown them with water before leaving.
"""


@pytest.fixture
def served(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LiveServer, str]]:
    monkeypatch.delenv("MAESTRO_QDRANT_URL", raising=False)
    monkeypatch.setenv("MAESTRO_HOME", str(tmp_path / "home"))  # the index of a PostgreSQL-backed server
    with LiveServer(db_url, AgentRegistry(), rate_limit_per_min=0) as srv:
        yield srv, db_url


def test_knowledge_api(served: tuple[LiveServer, str], monkeypatch: pytest.MonkeyPatch) -> None:
    srv, url = served
    operator, viewer = make_key(url, "default", "operator"), make_key(url, "default", "viewer")
    other = make_key(url, "other", "operator")
    with Client(srv.url, operator) as api, Client(srv.url, viewer) as ro, Client(srv.url, other) as them:
        coll = api.create_knowledge_collection("field", embedder="lexical", description="outdoor notes")
        assert (coll["name"], coll["embedder"], coll["dimension"], coll["documents"]) == ("field", "lexical", 1024, 0)
        assert coll["workspace_id"] == "default" and coll["created_by"] == "key:default-operator"
        with pytest.raises(ConflictError):
            api.create_knowledge_collection("field", embedder="lexical")
        with pytest.raises(ConfigError, match="unknown embedder"):
            api.create_knowledge_collection("x", embedder="word2vec")
        with pytest.raises(ValidationError):
            api.create_knowledge_collection("../x", embedder="lexical")
        with pytest.raises(AuthError):
            ro.create_knowledge_collection("y", embedder="lexical")

        first = api.ingest_knowledge("field", "guide.md", text=GUIDE)
        assert (first["status"], first["chunks"]) == ("ingested", 4)
        assert api.ingest_knowledge("field", "guide.md", text=GUIDE)["status"] == "unchanged"
        upload = api.ingest_knowledge("field", "notes/stoves.txt", content=b"Canister stoves dislike the cold.\n")
        assert upload["status"] == "ingested"
        with pytest.raises(ValidationError, match="binary"):
            api.ingest_knowledge("field", "map.png", content=b"\x89PNG\r\n\x1a\n\x00\x00")

        found = ro.search_knowledge("field", "is boiled stream water safe to drink?", k=2)
        top = found["passages"][0]
        assert "Boil stream water" in top["text"] and top["rank"] == 1
        assert top["citation"] == "[1] guide.md, lines 7-9 (Field guide > Water)"
        assert (top["start_line"], top["end_line"], top["document_id"]) == (7, 9, first["document_id"])
        assert GUIDE[top["start"] : top["end"]] == top["text"]
        docs = ro.list_knowledge_documents("field")
        assert sorted(d["source"] for d in docs) == ["guide.md", "notes/stoves.txt"]
        assert ro.get_knowledge_collection("field")["chunks"] == 5

        # another workspace: 404 on every named route, an empty list, and its own same-named collection is empty
        assert them.list_knowledge_collections() == []
        for call in (
            lambda: them.get_knowledge_collection("field"),
            lambda: them.search_knowledge("field", "water"),
            lambda: them.list_knowledge_documents("field"),
            lambda: them.ingest_knowledge("field", "x.md", text="intrusion"),
            lambda: them.delete_knowledge_document("field", first["document_id"]),
            lambda: them.delete_knowledge_collection("field"),
        ):
            with pytest.raises(NotFoundError):
                call()
        them.create_knowledge_collection("field", embedder="lexical")
        assert them.search_knowledge("field", "Boil stream water for one minute")["passages"] == []

        with httpx.Client(base_url=srv.url, timeout=10) as c:
            r = c.post(
                "/v1/knowledge/collections/field/documents",
                json={"source": "a.md", "text": "x", "content_base64": base64.b64encode(b"x").decode()},
                headers=auth(operator),
            )
            assert r.status_code == 422 and "exactly one of text and content_base64" in r.json()["error"]["message"]
            r = c.post("/v1/knowledge/collections/field/search", json={"query": "x", "k": 0}, headers=auth(viewer))
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
            r = c.get("/v1/knowledge/collections/no such", headers=auth(viewer))
            assert r.status_code == 422

        gone = api.delete_knowledge_document("field", upload["document_id"])
        assert gone["source"] == "notes/stoves.txt"
        assert all(p["source"] == "guide.md" for p in api.search_knowledge("field", "canister stoves", k=5)["passages"])
        assert api.delete_knowledge_collection("field")["documents"] == 1
        with pytest.raises(NotFoundError):
            ro.get_knowledge_collection("field")

        # an embeddings endpoint that changes its vectors' length behind the collection's back
        with FakeOpenAIServer() as fake:
            monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
            monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
            monkeypatch.setenv("MAESTRO_API_LOOPBACK_PROVIDERS", "1")  # the fake endpoint is on 127.0.0.1
            assert api.create_knowledge_collection("semantic", embedder="openai:emb-1")["dimension"] == 64
            api.ingest_knowledge("semantic", "guide.md", text=GUIDE)
            assert api.search_knowledge("semantic", "tent wind door", k=1)["passages"][0]["heading"].endswith("Tents")
            fake.embedding_dim = 16
            with pytest.raises(ValidationError, match="16-dimensional vectors but collection 'semantic' holds 64"):
                api.search_knowledge("semantic", "tent")


def _maestro(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MAESTRO), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def served_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LiveServer, str]]:
    """A server on SQLite: the CLI path is the same on PostgreSQL (test_knowledge_api covers its metadata)."""
    monkeypatch.delenv("MAESTRO_QDRANT_URL", raising=False)
    url = f"sqlite:///{tmp_path / 'maestro.db'}"
    with LiveServer(url, AgentRegistry(), rate_limit_per_min=0) as srv:
        yield srv, url


def test_knowledge_cli_through_the_server(served_sqlite: tuple[LiveServer, str], tmp_path: Path) -> None:
    srv, url = served_sqlite
    key = make_key(url, "default", "operator")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAESTRO_", "OPENAI_"))}
    env.update(MAESTRO_HOME=str(tmp_path / "cli-home"), COLUMNS="200")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text(GUIDE, encoding="utf-8")
    (docs / "blob.bin").write_bytes(b"\x00\x01\x02")
    remote = ["--server", srv.url, "--api-key", key]

    made = _maestro(tmp_path, *remote, "knowledge", "create", "camp", "--embedder", "lexical", env=env)
    assert made.returncode == 0 and "created camp (embedder lexical, 1024 dimensions)" in made.stdout, made.stderr
    refused = _maestro(tmp_path, *remote, "knowledge", "ingest", "camp", "docs", env=env)
    assert refused.returncode == 1 and refused.stdout == ""
    assert (
        refused.stderr.strip()
        == "error: docs/blob.bin: binary content (NUL bytes); only text files can be ingested (txt, md, ...)"
    )
    (docs / "blob.bin").unlink()
    ingested = _maestro(tmp_path, *remote, "knowledge", "ingest", "camp", "docs", env=env)
    assert ingested.returncode == 0 and "ingested  docs/guide.md (4 chunks)" in ingested.stdout, ingested.stderr
    again = _maestro(tmp_path, *remote, "knowledge", "ingest", "camp", "docs/guide.md", env=env)
    assert "unchanged docs/guide.md" in again.stdout
    found = _maestro(tmp_path, *remote, "knowledge", "search", "camp", "where to build a fire", "-k", "1", env=env)
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("[1] docs/guide.md, lines 11-13 (Field guide > Fire)  score=")
    listed = _maestro(tmp_path, *remote, "--json", "knowledge", "list", env=env)
    assert '"name": "camp"' in listed.stdout and '"documents": 1' in listed.stdout
    missing = _maestro(tmp_path, *remote, "knowledge", "search", "nope", "x", env=env)
    assert missing.returncode == 1 and missing.stderr.strip() == "error: no knowledge collection 'nope'"

    # the server holds the embedded index next to its database: a second process gets a clear error
    blocked = _maestro(tmp_path, "knowledge", "search", "camp", "fire", env={**env, "MAESTRO_DATABASE_URL": url})
    assert blocked.returncode == 1
    assert "in use by another process" in blocked.stderr and "--server" in blocked.stderr
    assert len(blocked.stderr.strip().splitlines()) == 1

    removed = _maestro(tmp_path, *remote, "knowledge", "rm", "camp", env=env)
    assert removed.returncode == 0 and "deleted collection camp (1 documents)" in removed.stdout
