"""The scripted model: replays a YAML/JSON script of turns. For tests, benchmarks and the offline demo.

A script is a list of turns (or a mapping with ``turns`` and defaults)::

    latency_s: 0.0                   # optional delay per call
    usage: {input_tokens: 12, output_tokens: 8}
    turns:
      - tool_calls:
          - {name: add, arguments: {a: 2, b: 3}}
      - content: "2 + 3 = {{last_tool_result}}"

The turn played is the number of assistant messages already in the conversation, so a run that
resumes after a crash continues the script where the run (not the process) left off. Text may use
``{{input}}``, ``{{last_tool_result}}`` and ``{{run_id}}``. Asking for more turns than the script
holds raises :class:`~agentmaestro.errors.ScriptExhaustedError`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from agentmaestro.core.messages import ModelRequest, ModelResponse, ToolCall, Usage
from agentmaestro.errors import ConfigError, ModelAPIError, ScriptExhaustedError, one_line


@dataclass(frozen=True, kw_only=True)
class Turn:
    """One scripted model answer."""

    content: str | None = None
    """Text (a final answer when there are no tool calls)."""
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    """(tool name, arguments) pairs."""
    usage: Usage | None = None
    """Token usage to report; the script default when None."""
    latency_s: float | None = None
    """Delay before answering; the script default when None."""
    error: str | None = None
    """If set, the call fails with this message instead of answering."""


@dataclass(frozen=True, kw_only=True)
class Script:
    """A parsed script."""

    turns: tuple[Turn, ...]
    """The turns, in order."""
    usage: Usage = field(default_factory=lambda: Usage(input_tokens=10, output_tokens=5))
    """Default usage per turn."""
    latency_s: float = 0.0
    """Default delay per turn."""

    @classmethod
    def parse(cls, data: Any, *, source: str = "<script>") -> Script:
        """Build a script from decoded YAML/JSON."""
        if isinstance(data, list):
            data = {"turns": data}
        if not isinstance(data, dict) or not isinstance(data.get("turns"), list):
            raise ConfigError(f"{source}: a script is a list of turns or a mapping with a 'turns' list")
        default_usage = _usage(data.get("usage"), source) or Usage(input_tokens=10, output_tokens=5)
        turns: list[Turn] = []
        for i, raw in enumerate(data["turns"], 1):
            if isinstance(raw, str):
                raw = {"content": raw}
            if not isinstance(raw, dict):
                raise ConfigError(f"{source}: turn {i} must be a mapping or a string")
            unknown = set(raw) - {"content", "tool_calls", "usage", "latency_s", "error"}
            if unknown:
                raise ConfigError(f"{source}: turn {i} has unknown field(s) {sorted(unknown)}")
            calls: list[tuple[str, dict[str, Any]]] = []
            for c in raw.get("tool_calls") or []:
                if not isinstance(c, dict) or not isinstance(c.get("name"), str):
                    raise ConfigError(f"{source}: turn {i}: each tool call needs a 'name'")
                args = c.get("arguments") or {}
                if not isinstance(args, dict):
                    raise ConfigError(f"{source}: turn {i}: tool call arguments must be a mapping")
                calls.append((c["name"], args))
            if raw.get("content") is None and not calls and raw.get("error") is None:
                raise ConfigError(f"{source}: turn {i} needs 'content', 'tool_calls' or 'error'")
            turns.append(
                Turn(
                    content=None if raw.get("content") is None else str(raw["content"]),
                    tool_calls=tuple(calls),
                    usage=_usage(raw.get("usage"), source),
                    latency_s=None if raw.get("latency_s") is None else float(raw["latency_s"]),
                    error=raw.get("error"),
                )
            )
        return cls(turns=tuple(turns), usage=default_usage, latency_s=float(data.get("latency_s", 0.0)))


def _usage(raw: Any, source: str) -> Usage | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: usage must be a mapping")
    return Usage(input_tokens=int(raw.get("input_tokens", 0)), output_tokens=int(raw.get("output_tokens", 0)))


_BUILTIN_PACKAGE = "agentmaestro.demo"


def load_script(ref: str) -> Script:
    """Load a script from a file path, or a built-in demo script by bare name (e.g. ``calculator``)."""
    path = Path(ref)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        source = str(path)
    else:
        candidate = resources.files(_BUILTIN_PACKAGE).joinpath("scripts", f"{ref}.yaml")
        if not candidate.is_file():
            raise ConfigError(f"scripted model: no script file {ref!r} (and no built-in script of that name)")
        text = candidate.read_text(encoding="utf-8")
        source = f"built-in script {ref!r}"
    try:
        data = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{source}: not valid YAML/JSON: {one_line(exc)}") from None
    return Script.parse(data, source=source)


class ScriptedModel:
    """Replays a :class:`Script`. Says so: every response's ``model`` is ``scripted:<ref>``."""

    def __init__(self, script: Script | list[Any] | dict[str, Any], *, ref: str = "inline") -> None:
        self.script = script if isinstance(script, Script) else Script.parse(script, source=ref)
        self.ref = ref

    @classmethod
    def from_ref(cls, ref: str) -> ScriptedModel:
        """Build from a file path or built-in script name."""
        return cls(load_script(ref), ref=ref)

    @property
    def name(self) -> str:
        """``scripted:<ref>``."""
        return f"scripted:{self.ref}"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer with the next turn of the script."""
        index = sum(1 for m in request.messages if m.role == "assistant")
        if index >= len(self.script.turns):
            raise ScriptExhaustedError(
                f"scripted model {self.ref!r} has {len(self.script.turns)} turn(s); turn {index + 1} was requested"
            )
        turn = self.script.turns[index]
        latency = self.script.latency_s if turn.latency_s is None else turn.latency_s
        if latency > 0:
            await asyncio.sleep(latency)
        if turn.error is not None:
            raise ModelAPIError(f"scripted model {self.ref!r}: turn {index + 1} fails: {turn.error}", status_code=400)
        values = _template_values(request)
        calls = tuple(
            ToolCall(call_id=f"call_{index}_{i}", name=name, arguments=_render_args(args, values))
            for i, (name, args) in enumerate(turn.tool_calls)
        )
        return ModelResponse(
            content=None if turn.content is None else _render(turn.content, values),
            tool_calls=calls,
            usage=turn.usage or self.script.usage,
            model=self.name,
            finish_reason="tool_calls" if calls else "stop",
        )


def _template_values(request: ModelRequest) -> dict[str, str]:
    task = next((m.content or "" for m in request.messages if m.role == "user"), "")
    last_tool = next((m.content or "" for m in reversed(request.messages) if m.role == "tool"), "")
    return {"input": task, "last_tool_result": last_tool, "run_id": request.run_id or ""}


def _render(text: str, values: dict[str, str]) -> str:
    if "{{" not in text:
        return text
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value).replace("{{ " + key + " }}", value)
    return text


def _render_args(args: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    return {k: _render(v, values) if isinstance(v, str) else v for k, v in args.items()}
