"""LangChain adapters (optional extra ``agentmaestro[langchain]``, needs ``langchain-core``).

* :class:`LangChainModel` makes any LangChain chat model (a ``BaseChatModel``: ``ChatOpenAI``,
  ``ChatAnthropic``, ``ChatOllama``, the fake chat models of ``langchain-core``...) an AgentMaestro model: the
  engine keeps the conversation, the governance and the records; LangChain only answers one turn at a time.
* :func:`langchain_tool` turns a LangChain tool (a ``BaseTool``: ``@langchain_core.tools.tool`` functions,
  ``StructuredTool``, community tools) into an AgentMaestro :class:`~agentmaestro.tools.registry.Tool` with a
  risk level, so its calls pass the risk gate, the policy and the approval rules like any other tool.

Example::

    from langchain_openai import ChatOpenAI
    from langchain_community.tools import DuckDuckGoSearchRun

    agent = Agent(
        name="searcher",
        model=LangChainModel(ChatOpenAI(model="gpt-4.1-mini")),
        tools=[langchain_tool(DuckDuckGoSearchRun(), risk=RiskLevel.ELEVATED, idempotent=True)],
    )
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from agentmaestro.core.messages import Message, ModelRequest, ModelResponse, ToolCall, ToolSpec, Usage
from agentmaestro.core.risk import RiskLevel
from agentmaestro.errors import ConfigError, ModelAPIError
from agentmaestro.tools.registry import DEFAULT_TIMEOUT_S, Tool

__all__ = ["LangChainModel", "LangChainModelError", "langchain_tool", "to_langchain_messages"]

INSTALL_HINT = "install agentmaestro[langchain] (pip install 'agentmaestro[langchain]') to use LangChain adapters"


def _require_langchain() -> None:
    try:
        import langchain_core  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None


class LangChainModelError(ModelAPIError):
    """A LangChain chat model raised.

    Transient (retried by the engine) when the underlying error carries a 429/5xx status or is a timeout, a
    connection error or a rate-limit error; otherwise the step fails and the agent's retry policy decides.
    """


class LangChainModel:
    """An AgentMaestro model backed by a LangChain chat model.

    Tools are bound with the chat model's ``bind_tools`` when it supports tool calling (models that do not are
    used as they are and simply never call tools). Token usage comes from the answer's ``usage_metadata``.
    """

    def __init__(self, chat_model: Any, *, name: str | None = None) -> None:
        """Wrap a chat model.

        Args:
            chat_model: A ``langchain_core.language_models.BaseChatModel`` (anything with ``ainvoke`` taking a
                list of messages and returning an ``AIMessage`` works).
            name: Model string suffix; defaults to the chat model's ``model_name``/``model`` attribute, else its
                LangChain type. The model string is ``langchain:<name>``, and prices are looked up by that name.

        Raises:
            ConfigError: langchain-core is not installed, or the object cannot be invoked.
        """
        _require_langchain()
        if not hasattr(chat_model, "ainvoke"):
            raise ConfigError(f"{type(chat_model).__name__} is not a LangChain chat model (no ainvoke)")
        self.chat_model = chat_model
        self._name = name or _model_name(chat_model)

    @property
    def name(self) -> str:
        """``langchain:<name>``."""
        return f"langchain:{self._name}"

    def __repr__(self) -> str:
        return f"LangChainModel({type(self.chat_model).__name__}, name={self._name!r})"

    def _runnable(self, tools: tuple[ToolSpec, ...]) -> Any:
        if not tools:
            return self.chat_model
        bind = getattr(self.chat_model, "bind_tools", None)
        if bind is None:
            return self.chat_model
        try:
            return bind([_tool_to_langchain(t) for t in tools])
        except NotImplementedError:
            return self.chat_model

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Ask the chat model for the next turn.

        Raises:
            ModelAPIError: the chat model raised (see :class:`LangChainModelError` for what is transient).
        """
        messages = to_langchain_messages(request.messages)
        runnable = self._runnable(request.tools)
        try:
            answer = await runnable.ainvoke(messages)
        except ModelAPIError:
            raise
        except Exception as exc:
            raise _map_error(self.name, exc) from exc
        return self._to_response(answer)

    def _to_response(self, answer: Any) -> ModelResponse:
        calls: list[ToolCall] = []
        for call in getattr(answer, "tool_calls", None) or ():
            args = call.get("args")
            calls.append(
                ToolCall(
                    call_id=call.get("id") or f"call_{uuid.uuid4().hex[:12]}",
                    name=str(call.get("name")),
                    arguments=dict(args) if isinstance(args, Mapping) else {"_raw": _dump(args)},
                )
            )
        for bad in getattr(answer, "invalid_tool_calls", None) or ():
            calls.append(
                ToolCall(
                    call_id=bad.get("id") or f"call_{uuid.uuid4().hex[:12]}",
                    name=str(bad.get("name") or ""),
                    arguments={"_raw": str(bad.get("args") or "")},
                )
            )
        usage = getattr(answer, "usage_metadata", None) or {}
        metadata = getattr(answer, "response_metadata", None) or {}
        finish = metadata.get("finish_reason") or metadata.get("stop_reason")
        text = _text_of(getattr(answer, "content", answer))
        return ModelResponse(
            content=(text or None) if calls else text,
            tool_calls=tuple(calls),
            usage=Usage(
                input_tokens=int(usage.get("input_tokens") or 0), output_tokens=int(usage.get("output_tokens") or 0)
            ),
            model=self.name,
            finish_reason=str(finish) if finish else ("tool_calls" if calls else "stop"),
        )


def _model_name(chat_model: Any) -> str:
    for attr in ("model_name", "model", "model_id"):
        value = getattr(chat_model, attr, None)
        if isinstance(value, str) and value:
            return value
    llm_type = getattr(chat_model, "_llm_type", None)
    return llm_type if isinstance(llm_type, str) and llm_type else type(chat_model).__name__


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, Mapping) and block.get("type") == "text" and isinstance(block.get("text"), str):
                parts.append(block["text"])
        return "".join(parts)
    return "" if content is None else str(content)


def _dump(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _map_error(model: str, exc: Exception) -> ModelAPIError:
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    status = status if isinstance(status, int) and 100 <= status <= 599 else None
    kind = type(exc).__name__
    transient = isinstance(exc, TimeoutError | ConnectionError) or any(
        word in kind for word in ("Timeout", "Connection", "RateLimit", "Overloaded")
    )
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    message = f"{model} raised {kind}" + (f": {detail}" if detail else "")
    return LangChainModelError(message[:2000], status_code=status, transient=None if status else transient)


def to_langchain_messages(messages: Sequence[Message]) -> list[Any]:
    """Our conversation as LangChain messages (System, Human, AI with ``tool_calls``, Tool).

    Raises:
        ConfigError: langchain-core is missing, or a tool message has no ``tool_call_id``.
    """
    _require_langchain()
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    out: list[Any] = []
    for message in messages:
        if message.role == "system":
            out.append(SystemMessage(content=message.content or ""))
        elif message.role == "user":
            out.append(HumanMessage(content=message.content or ""))
        elif message.role == "assistant":
            out.append(
                AIMessage(
                    content=message.content or "",
                    tool_calls=[
                        {"name": c.name, "args": dict(c.arguments), "id": c.call_id, "type": "tool_call"}
                        for c in message.tool_calls
                    ],
                )
            )
        else:
            if message.tool_call_id is None:
                raise ConfigError(f"tool message for {message.name!r} has no tool_call_id")
            kwargs: dict[str, Any] = {"name": message.name} if message.name else {}
            out.append(ToolMessage(content=message.content or "", tool_call_id=message.tool_call_id, **kwargs))
    return out


def _tool_to_langchain(tool: ToolSpec) -> dict[str, Any]:
    """An OpenAI-style function definition, the format every ``bind_tools`` accepts."""
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


# ------------------------------------------------------------------------------------------------ tools


def langchain_tool(
    lc_tool: Any,
    *,
    risk: RiskLevel | str | int = RiskLevel.SAFE,
    idempotent: bool = False,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Tool:
    """Turn a LangChain tool into a governed AgentMaestro tool.

    The argument schema is the tool's ``tool_call_schema`` (its pydantic ``args_schema`` without injected
    arguments); calls are validated strictly against it and run with the tool's ``ainvoke``.

    Args:
        lc_tool: A ``langchain_core.tools.BaseTool``.
        risk: Risk level of a call (drives the approval gate).
        idempotent: Whether repeating a call is harmless.
        name: Tool name; defaults to the LangChain tool's name.
        description: Description; defaults to the LangChain tool's description.
        timeout_s: Seconds a call may take.

    Returns:
        The AgentMaestro tool.

    Raises:
        ConfigError: langchain-core is missing, the object is not a LangChain tool, or its schema is a plain JSON
            schema dict (give it a pydantic ``args_schema``).
    """
    _require_langchain()
    import pydantic
    from langchain_core.tools import BaseTool

    if not isinstance(lc_tool, BaseTool):
        raise ConfigError(f"langchain_tool() needs a langchain_core BaseTool, got {type(lc_tool).__name__}")
    schema = lc_tool.tool_call_schema
    if not (isinstance(schema, type) and issubclass(schema, pydantic.BaseModel)):
        raise ConfigError(
            f"LangChain tool {lc_tool.name!r} has a JSON-schema dict as args_schema; give it a pydantic model"
        )

    parameters: list[inspect.Parameter] = []
    annotations: dict[str, Any] = {}
    for field_name, info in schema.model_fields.items():
        annotation = info.annotation if info.annotation is not None else Any
        parameters.append(inspect.Parameter(field_name, inspect.Parameter.KEYWORD_ONLY, default=info))
        annotations[field_name] = annotation

    async def call_langchain_tool(**arguments: Any) -> Any:
        return await lc_tool.ainvoke(_plain(arguments))

    call_langchain_tool.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    call_langchain_tool.__annotations__ = annotations
    call_langchain_tool.__name__ = lc_tool.name
    call_langchain_tool.__qualname__ = f"langchain_tool.<locals>.{lc_tool.name}"
    call_langchain_tool.__doc__ = lc_tool.description
    return Tool(
        call_langchain_tool,
        name=name or lc_tool.name,
        description=description or lc_tool.description or None,
        risk=risk,
        idempotent=idempotent,
        timeout_s=timeout_s,
    )


def _plain(arguments: dict[str, Any]) -> dict[str, Any]:
    """Validated arguments as plain data (nested pydantic models dumped), for LangChain to validate again."""
    import pydantic

    def plain(value: Any) -> Any:
        if isinstance(value, pydantic.BaseModel):
            return value.model_dump()
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {k: plain(v) for k, v in arguments.items()}
