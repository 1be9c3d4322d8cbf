"""OpenAI chat completions, and any OpenAI-compatible endpoint (OpenRouter, Ollama, vLLM, llama.cpp server).

Model strings: ``openai:MODEL``, ``openrouter:VENDOR/MODEL``, ``ollama:MODEL``. Endpoints and keys come
from the environment unless given explicitly:

==========  =====================================================  =====================
provider    base URL                                               API key
==========  =====================================================  =====================
openai      ``OPENAI_BASE_URL`` (default: api.openai.com)          ``OPENAI_API_KEY``
openrouter  ``OPENROUTER_BASE_URL`` (default: openrouter.ai/api/v1)  ``OPENROUTER_API_KEY``
ollama      ``OLLAMA_BASE_URL`` (default: 127.0.0.1:11434/v1)      none needed
==========  =====================================================  =====================

A server on a loopback or private address needs no key. The ``openai`` SDK is imported on first use,
so resolving other providers stays fast.

Calls are rate limited per provider and endpoint when limits are set (``MAESTRO_RPM_OPENAI``,
``MAESTRO_TPM_OPENROUTER``, ... or ``rpm=``/``tpm=``; see :mod:`agentmaestro.models.ratelimit`). While a delta sink
is installed (:func:`agentmaestro.models.streaming.set_delta_sink`), calls that belong to a run are streamed
(``stream_options={"include_usage": true}``) and their text is published as it arrives; the full response is
still returned at the end.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agentmaestro.core.messages import Message, ModelRequest, ModelResponse, ToolCall, ToolSpec, Usage
from agentmaestro.errors import ConfigError, ModelAPIError, ModelUnavailableError
from agentmaestro.models.ratelimit import UNLIMITED, estimate_tokens, limiter_for
from agentmaestro.models.streaming import delta_publisher

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from openai import AsyncOpenAI, OpenAIError
    from openai.types.chat import ChatCompletion, ChatCompletionMessageParam, ChatCompletionToolParam

__all__ = ["OpenAIModel"]

MAX_ERROR_BODY_CHARS = 2000
"""Provider error bodies are truncated to this many characters."""

_LOCAL_KEY = "not-set"
_LOCAL_HOSTNAMES = frozenset({"localhost", "host.docker.internal"})


@dataclass(frozen=True, kw_only=True)
class _Endpoint:
    """Where a provider lives by default, and which environment variables override it."""

    base_url_env: str | None
    default_base_url: str | None
    api_key_env: str | None
    default_api_key: str | None = None


_ENDPOINTS: dict[str, _Endpoint] = {
    "openai": _Endpoint(base_url_env="OPENAI_BASE_URL", default_base_url=None, api_key_env="OPENAI_API_KEY"),
    "openrouter": _Endpoint(
        base_url_env="OPENROUTER_BASE_URL",
        default_base_url="https://openrouter.ai/api/v1",
        api_key_env="OPENROUTER_API_KEY",
    ),
    "ollama": _Endpoint(
        base_url_env="OLLAMA_BASE_URL",
        default_base_url="http://127.0.0.1:11434/v1",
        api_key_env=None,
        default_api_key="ollama",
    ),
}
_NO_DEFAULTS = _Endpoint(base_url_env=None, default_base_url=None, api_key_env=None)


class OpenAIModel:
    """A chat model behind the OpenAI chat-completions API.

    Each call opens and closes its own SDK client, so one instance can serve any number of event
    loops and threads. Tool-call arguments that are not a JSON object come back as
    ``{"_raw": "<text>"}`` so the engine can report a validation error to the model.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        provider: str = "openai",
        max_retries: int = 2,
        timeout_s: float = 60.0,
        rpm: float | None = None,
        tpm: float | None = None,
    ) -> None:
        """Configure a model; nothing is contacted until :meth:`complete`.

        Args:
            model: The provider's model name, e.g. ``gpt-4.1-mini`` or ``openai/gpt-4o-mini``.
            base_url: Endpoint URL; defaults from the provider's environment variable (see module docs).
            api_key: API key; defaults from the provider's environment variable, read at call time.
            provider: Provider prefix used in :attr:`name` and for the environment defaults.
            max_retries: Retries the SDK makes itself on connection errors, 408, 409, 429 and 5xx.
            timeout_s: Default timeout of one call in seconds; ``ModelRequest.timeout_s`` overrides it.
            rpm: Requests per minute to this endpoint, shared by the process (default ``MAESTRO_RPM_<PROVIDER>``).
            tpm: Tokens per minute to this endpoint, shared by the process (default ``MAESTRO_TPM_<PROVIDER>``).
        """
        if not model:
            raise ConfigError("OpenAIModel needs a model name")
        self.model = model
        self.provider = provider
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.rpm = rpm
        self.tpm = tpm
        self._endpoint = _ENDPOINTS.get(provider, _NO_DEFAULTS)
        env_url = os.environ.get(self._endpoint.base_url_env) if self._endpoint.base_url_env else None
        self.base_url: str | None = base_url or env_url or self._endpoint.default_base_url
        self._api_key = api_key

    @property
    def name(self) -> str:
        """The model string, ``provider:model``."""
        return f"{self.provider}:{self.model}"

    def __repr__(self) -> str:
        return f"OpenAIModel({self.model!r}, provider={self.provider!r}, base_url={self.base_url!r})"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Run one chat completion (streamed when a delta sink listens to this run).

        Raises:
            ConfigError: no API key is configured for a remote endpoint.
            ModelAPIError: the provider answered with an error, timed out or could not be reached.
        """
        import openai

        api_key = self._resolve_api_key()
        messages = [_message_to_openai(message) for message in request.messages]
        kwargs: dict[str, Any] = {}
        if request.tools:
            kwargs["tools"] = [_tool_to_openai(tool) for tool in request.tools]
        if request.max_output_tokens is not None:
            # api.openai.com wants max_completion_tokens (o-series reject max_tokens); other servers take max_tokens.
            key = "max_completion_tokens" if self._is_openai_api() else "max_tokens"
            kwargs[key] = request.max_output_tokens
        timeout = request.timeout_s if request.timeout_s is not None else self.timeout_s
        publish = delta_publisher(request.run_id)
        limiter = limiter_for(self.provider, self.base_url, rpm=self.rpm, tpm=self.tpm)
        permit = await limiter.acquire(estimate_tokens(request)) if limiter is not None else UNLIMITED
        try:
            async with openai.AsyncOpenAI(
                api_key=api_key, base_url=self.base_url, max_retries=self.max_retries, timeout=timeout
            ) as client:
                if publish is None:
                    completion = await client.chat.completions.create(
                        model=self.model,
                        messages=messages,
                        timeout=timeout,
                        **kwargs,
                    )
                    response = self._to_response(completion)
                else:
                    response = await self._stream(client, messages, kwargs, timeout, publish)
        except openai.OpenAIError as exc:
            permit.settle(0)
            raise self._map_error(exc, api_key) from exc
        except BaseException:
            permit.settle(0)
            raise
        permit.settle(response.usage.total_tokens)
        return response

    async def _stream(
        self,
        client: AsyncOpenAI,
        messages: list[ChatCompletionMessageParam],
        kwargs: dict[str, Any],
        timeout: float,
        publish: Callable[[str], None],
    ) -> ModelResponse:
        """Stream a completion, publishing text deltas; assemble text, tool calls and usage from the chunks."""
        stream = await client.chat.completions.create(
            model=self.model,
            messages=messages,
            timeout=timeout,
            stream=True,
            stream_options={"include_usage": True},
            **kwargs,
        )
        text: list[str] = []
        refusal: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        finish_reason: str | None = None
        usage = Usage()
        saw_choice = False
        async with stream:
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = Usage(
                        input_tokens=chunk.usage.prompt_tokens or 0, output_tokens=chunk.usage.completion_tokens or 0
                    )
                for choice in chunk.choices or ():
                    if choice.index != 0:
                        continue
                    saw_choice = True
                    delta = choice.delta
                    if delta.content:
                        text.append(delta.content)
                        publish(delta.content)
                    if delta.refusal:
                        refusal.append(delta.refusal)
                    for part in delta.tool_calls or ():
                        slot = calls.setdefault(part.index, {"id": None, "name": "", "arguments": []})
                        if part.id:
                            slot["id"] = part.id
                        if part.function is not None:
                            if part.function.name:
                                slot["name"] += part.function.name
                            if part.function.arguments:
                                slot["arguments"].append(part.function.arguments)
                    if choice.finish_reason is not None:
                        finish_reason = choice.finish_reason
        if not saw_choice:
            raise ModelAPIError(f"{self.name} streamed no choices", status_code=None)
        tool_calls = tuple(
            ToolCall(
                call_id=slot["id"] or f"call_{index}",
                name=slot["name"],
                arguments=_decode_arguments("".join(slot["arguments"])),
            )
            for index, slot in sorted(calls.items())
        )
        content = "".join(text) if text else ("".join(refusal) if refusal else None)
        return ModelResponse(
            content=content, tool_calls=tool_calls, usage=usage, model=self.name, finish_reason=finish_reason
        )

    async def check(self) -> None:
        """Raise when this model cannot be called from here: no API key, or a local server down or without it.

        Raises:
            ModelUnavailableError: see :func:`agentmaestro.models.base.check_model`.
        """
        from agentmaestro.models._probe import probe_local_server

        try:
            api_key = self._resolve_api_key()
        except ConfigError as exc:
            raise ModelUnavailableError(str(exc)) from None
        if self.base_url and _is_local_url(self.base_url):
            await probe_local_server(
                name=self.name,
                model=self.model,
                base_url=self.base_url,
                api_key=api_key,
                must_list_model=self.provider == "ollama",
                base_url_env=self._endpoint.base_url_env,
            )

    def _resolve_api_key(self) -> str:
        if self._api_key:
            return self._api_key
        env_name = self._endpoint.api_key_env
        key = os.environ.get(env_name) if env_name else None
        if key:
            return key
        if self._endpoint.default_api_key:
            return self._endpoint.default_api_key
        if self.base_url and _is_local_url(self.base_url):
            return _LOCAL_KEY
        where = f"set {env_name}" if env_name else "pass api_key=..."
        raise ConfigError(f"no API key for model {self.name!r} at {self.base_url or 'api.openai.com'}: {where}")

    def _is_openai_api(self) -> bool:
        return self.base_url is None or urlsplit(self.base_url).hostname == "api.openai.com"

    def _to_response(self, completion: ChatCompletion) -> ModelResponse:
        choices = getattr(completion, "choices", None) or []
        if not choices:
            body = _truncate(_dump(completion))
            raise ModelAPIError(f"{self.name} returned no choices", status_code=None, body=body)
        choice = choices[0]
        message = choice.message
        calls: list[ToolCall] = []
        for tool_call in message.tool_calls or ():
            if tool_call.type == "function":
                calls.append(
                    ToolCall(
                        call_id=tool_call.id,
                        name=tool_call.function.name,
                        arguments=_decode_arguments(tool_call.function.arguments),
                    )
                )
            else:
                calls.append(
                    ToolCall(
                        call_id=tool_call.id, name=tool_call.custom.name, arguments={"_raw": tool_call.custom.input}
                    )
                )
        usage = completion.usage
        return ModelResponse(
            content=message.content if message.content is not None else message.refusal,
            tool_calls=tuple(calls),
            usage=Usage(
                input_tokens=usage.prompt_tokens if usage else 0,
                output_tokens=usage.completion_tokens if usage else 0,
            ),
            model=self.name,
            finish_reason=choice.finish_reason,
        )

    def _map_error(self, exc: OpenAIError, api_key: str) -> ModelAPIError:
        import openai

        return _sdk_error(openai, exc, api_key, name=self.name, base_url=self.base_url)


def _message_to_openai(message: Message) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content or ""}
    if message.role == "user":
        return {"role": "user", "content": message.content or ""}
    if message.role == "assistant":
        if not message.tool_calls:
            return {"role": "assistant", "content": message.content or ""}
        return {
            "role": "assistant",
            "content": message.content,
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
                }
                for call in message.tool_calls
            ],
        }
    if message.tool_call_id is None:
        raise ConfigError(f"tool message for {message.name!r} has no tool_call_id")
    return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content or ""}


def _tool_to_openai(tool: ToolSpec) -> ChatCompletionToolParam:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


def _decode_arguments(raw: str) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_raw": raw}


def _is_local_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host in _LOCAL_HOSTNAMES or host.endswith((".localhost", ".local")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


def _describe_cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return f"{type(cause).__name__}: {cause}" if cause else str(exc)


def _dump(value: Any) -> str:
    if hasattr(value, "model_dump_json"):
        return str(value.model_dump_json())
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _redact(text: str, api_key: str) -> str:
    return text.replace(api_key, "***") if len(api_key) >= 8 else text


def _truncate(text: str) -> str:
    return text if len(text) <= MAX_ERROR_BODY_CHARS else text[:MAX_ERROR_BODY_CHARS] + "...(truncated)"


def _sdk_error(sdk: ModuleType, exc: Exception, api_key: str, *, name: str, base_url: str | None) -> ModelAPIError:
    """The ModelAPIError for an error of a provider SDK generated alike (``openai``, ``anthropic``).

    The API key is redacted from every part; an error body is truncated to ``MAX_ERROR_BODY_CHARS``.
    """
    status: int | None = None
    body: str | None = None
    if isinstance(exc, sdk.APITimeoutError):
        detail = "timed out"
    elif isinstance(exc, sdk.APIConnectionError):
        detail = f"could not be reached ({_redact(_describe_cause(exc), api_key)})"
    elif isinstance(exc, sdk.APIStatusError | sdk.APIResponseValidationError):
        status = exc.status_code
        raw = exc.body if exc.body is not None else exc.response.text
        body = _truncate(_redact(raw if isinstance(raw, str) else _dump(raw), api_key))
        message = getattr(exc, "api_message", None) or exc.message  # anthropic: the body's error.message
        detail = f"returned HTTP {status}: {_redact(str(message), api_key)}"
    else:
        detail = f"failed: {_redact(str(exc), api_key)}"
    where = f" at {base_url}" if base_url else ""
    return ModelAPIError(f"{name}{where} {detail}", status_code=status, body=body)
