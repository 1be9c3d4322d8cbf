"""Anthropic's Messages API through the official ``anthropic`` SDK.

Model strings: ``anthropic:MODEL`` (e.g. ``anthropic:claude-sonnet-4-5``). The API key comes from
``ANTHROPIC_API_KEY`` (read at call time, never logged or put in an error), the endpoint from
``ANTHROPIC_BASE_URL`` (default: api.anthropic.com). A server on a loopback or private address needs no key.

Mapping to the Messages API:

* system messages become the ``system`` parameter (several are joined by blank lines);
* an assistant message's tool calls become ``tool_use`` content blocks after its text;
* tool results become ``tool_result`` blocks of a user message; consecutive results (and a user message right
  after them) are merged into one user turn, as the API requires alternating turns;
* a :class:`~agentmaestro.core.messages.ToolSpec` becomes ``{"name", "description", "input_schema"}``;
* the answer's text blocks are joined, its ``tool_use`` blocks become tool calls, ``stop_reason`` is the finish
  reason and usage counts input tokens (including cache reads and writes) and output tokens.

Calls are rate limited per endpoint (``MAESTRO_RPM_ANTHROPIC``, ``MAESTRO_TPM_ANTHROPIC``; see
:mod:`agentmaestro.models.ratelimit`) and stream their text to the delta sink when one is installed (see
:func:`agentmaestro.models.streaming.set_delta_sink`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, cast

from agentmaestro.core.messages import Message, ModelRequest, ModelResponse, ToolCall, ToolSpec, Usage
from agentmaestro.errors import ConfigError, ModelAPIError
from agentmaestro.models.openai import _dump, _is_local_url, _sdk_error
from agentmaestro.models.ratelimit import UNLIMITED, estimate_tokens, limiter_for
from agentmaestro.models.streaming import delta_publisher

if TYPE_CHECKING:
    from collections.abc import Callable

    from anthropic import AnthropicError, AsyncAnthropic
    from anthropic.types import Message as AnthropicMessage
    from anthropic.types import MessageParam, ToolParam

__all__ = ["DEFAULT_MAX_TOKENS", "AnthropicModel"]

DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` sent when the request does not set ``max_output_tokens`` (the API requires one)."""

API_KEY_ENV = "ANTHROPIC_API_KEY"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"
_LOCAL_KEY = "not-set"
_EMPTY = "(empty)"  # the API rejects empty text blocks


class AnthropicModel:
    """A Claude model behind the Anthropic Messages API.

    Each call opens and closes its own SDK client, so one instance can serve any number of event loops and
    threads.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        max_retries: int = 2,
        timeout_s: float = 60.0,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        rpm: float | None = None,
        tpm: float | None = None,
    ) -> None:
        """Configure a model; nothing is contacted until :meth:`complete`.

        Args:
            model: Anthropic's model name, e.g. ``claude-sonnet-4-5``.
            base_url: Endpoint URL (without ``/v1``); defaults to ``ANTHROPIC_BASE_URL``, then api.anthropic.com.
            api_key: API key; defaults to ``ANTHROPIC_API_KEY``, read at call time.
            max_retries: Retries the SDK makes itself on connection errors, 408, 409, 429 and 5xx.
            timeout_s: Default timeout of one call in seconds; ``ModelRequest.timeout_s`` overrides it.
            max_tokens: Output token cap when the request gives none.
            rpm: Requests per minute for this endpoint, shared by the process (default ``MAESTRO_RPM_ANTHROPIC``).
            tpm: Tokens per minute for this endpoint, shared by the process (default ``MAESTRO_TPM_ANTHROPIC``).
        """
        if not model:
            raise ConfigError("AnthropicModel needs a model name")
        if max_tokens < 1:
            raise ConfigError(f"AnthropicModel max_tokens must be positive, got {max_tokens!r}")
        self.model = model
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.base_url: str | None = base_url or os.environ.get(BASE_URL_ENV) or None
        self.rpm = rpm
        self.tpm = tpm
        self._api_key = api_key

    @property
    def name(self) -> str:
        """The model string, ``anthropic:model``."""
        return f"anthropic:{self.model}"

    def __repr__(self) -> str:
        return f"AnthropicModel({self.model!r}, base_url={self.base_url!r})"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Run one Messages API call (streamed when a delta sink listens to this run).

        Raises:
            ConfigError: no API key is configured for a remote endpoint, or a message cannot be mapped.
            ModelAPIError: the provider answered with an error, timed out or could not be reached.
        """
        import anthropic

        api_key = self._resolve_api_key()
        system, messages = to_anthropic_messages(request.messages)
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_output_tokens or self.max_tokens,
            "messages": messages,
        }
        if system:
            kwargs["system"] = system
        if request.tools:
            kwargs["tools"] = [tool_to_anthropic(tool) for tool in request.tools]
        timeout = request.timeout_s if request.timeout_s is not None else self.timeout_s
        publish = delta_publisher(request.run_id)
        limiter = limiter_for("anthropic", self.base_url, rpm=self.rpm, tpm=self.tpm)
        permit = await limiter.acquire(estimate_tokens(request)) if limiter is not None else UNLIMITED
        try:
            async with anthropic.AsyncAnthropic(
                api_key=api_key, base_url=self.base_url, max_retries=self.max_retries, timeout=timeout
            ) as client:
                if publish is None:
                    message = await client.messages.create(**kwargs, timeout=timeout)
                else:
                    message = await _stream(client, kwargs, timeout, publish)
        except anthropic.AnthropicError as exc:
            permit.settle(0)
            raise self._map_error(exc, api_key) from exc
        except BaseException:
            permit.settle(0)
            raise
        response = self._to_response(message)
        permit.settle(response.usage.total_tokens)
        return response

    async def check(self) -> None:
        """Raise when no API key is configured for a remote endpoint (nothing is contacted).

        Raises:
            ConfigError: no API key; see :func:`agentmaestro.models.base.check_model`.
        """
        self._resolve_api_key()

    def _resolve_api_key(self) -> str:
        if self._api_key:
            return self._api_key
        key = os.environ.get(API_KEY_ENV)
        if key:
            return key
        if self.base_url and _is_local_url(self.base_url):
            return _LOCAL_KEY
        raise ConfigError(
            f"no API key for model {self.name!r} at {self.base_url or 'api.anthropic.com'}: set {API_KEY_ENV}"
        )

    def _to_response(self, message: AnthropicMessage) -> ModelResponse:
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in getattr(message, "content", None) or ():
            kind = getattr(block, "type", None)
            if kind == "text":
                texts.append(block.text)
            elif kind == "tool_use":
                raw = block.input
                arguments = raw if isinstance(raw, dict) else {"_raw": raw if isinstance(raw, str) else _dump(raw)}
                calls.append(ToolCall(call_id=block.id, name=block.name, arguments=arguments))
        usage = getattr(message, "usage", None)
        input_tokens = 0
        output_tokens = 0
        if usage is not None:
            input_tokens = (
                (usage.input_tokens or 0)
                + (getattr(usage, "cache_creation_input_tokens", None) or 0)
                + (getattr(usage, "cache_read_input_tokens", None) or 0)
            )
            output_tokens = usage.output_tokens or 0
        return ModelResponse(
            content="".join(texts) if texts else None,
            tool_calls=tuple(calls),
            usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens),
            model=self.name,
            finish_reason=getattr(message, "stop_reason", None),
        )

    def _map_error(self, exc: AnthropicError, api_key: str) -> ModelAPIError:
        import anthropic

        return _sdk_error(anthropic, exc, api_key, name=self.name, base_url=self.base_url)


async def _stream(
    client: AsyncAnthropic, kwargs: dict[str, Any], timeout: float, publish: Callable[[str], None]
) -> AnthropicMessage:
    async with client.messages.stream(**kwargs, timeout=timeout) as stream:
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                publish(event.delta.text)
        return await stream.get_final_message()


def to_anthropic_messages(messages: tuple[Message, ...] | list[Message]) -> tuple[str, list[MessageParam]]:
    """Split a conversation into the ``system`` text and the Messages API ``messages`` list.

    Raises:
        ConfigError: a tool message has no ``tool_call_id``.
    """
    system: list[str] = []
    turns: list[tuple[str, list[dict[str, Any]]]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))

    for message in messages:
        if message.role == "system":
            if message.content:
                system.append(message.content)
        elif message.role == "user":
            add("user", [{"type": "text", "text": message.content or _EMPTY}])
        elif message.role == "assistant":
            blocks: list[dict[str, Any]] = []
            if message.content:
                blocks.append({"type": "text", "text": message.content})
            for call in message.tool_calls:
                blocks.append({"type": "tool_use", "id": call.call_id, "name": call.name, "input": call.arguments})
            add("assistant", blocks or [{"type": "text", "text": _EMPTY}])
        else:
            if message.tool_call_id is None:
                raise ConfigError(f"tool message for {message.name!r} has no tool_call_id")
            add(
                "user",
                [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.content or ""}],
            )
    out: list[MessageParam] = []
    for role, blocks in turns:
        if len(blocks) == 1 and blocks[0]["type"] == "text":
            out.append(cast("MessageParam", {"role": role, "content": blocks[0]["text"]}))
        else:
            out.append(cast("MessageParam", {"role": role, "content": blocks}))
    return "\n\n".join(system), out


def tool_to_anthropic(tool: ToolSpec) -> ToolParam:
    """A tool definition for the Messages API."""
    return {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}
