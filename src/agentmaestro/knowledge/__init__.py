"""Knowledge (RAG) per workspace: text documents, chunked, embedded, stored in Qdrant and searched with citations.

See docs/knowledge.md.

Example::

    from agentmaestro.knowledge import knowledge_for

    kb = knowledge_for(store)
    await kb.create_collection("default", "handbook", embedder="openai:text-embedding-3-small")
    await kb.ingest_paths("default", "handbook", [Path("docs/")])
    for p in await kb.search("default", "handbook", "how do refunds work?", k=3):
        print(p.rank, p.source, p.location, p.score)
"""

from __future__ import annotations

from agentmaestro.knowledge.base import (
    IngestResult,
    KnowledgeBase,
    Passage,
    format_passages,
    knowledge_for,
    use_knowledge,
)
from agentmaestro.knowledge.chunking import Chunk, chunk_text, decode_text
from agentmaestro.knowledge.embedders import Embedder, LexicalEmbedder, MiniLMEmbedder, OpenAIEmbedder, embedder_for
from agentmaestro.knowledge.index import VectorIndex, default_location, index_at

__all__ = [
    "Chunk",
    "Embedder",
    "IngestResult",
    "KnowledgeBase",
    "LexicalEmbedder",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "Passage",
    "VectorIndex",
    "chunk_text",
    "decode_text",
    "default_location",
    "embedder_for",
    "format_passages",
    "index_at",
    "knowledge_for",
    "use_knowledge",
]
