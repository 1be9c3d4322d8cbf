"""Tools: Python callables with a JSON-schema signature, a risk level and a timeout.

``@tool`` turns a function into a :class:`Tool`. The argument schema comes from the signature and type hints (through
a pydantic model), the description from the docstring. :meth:`Tool.invoke` validates a model's proposed arguments
strictly, runs the function (sync functions in a worker thread) under a timeout, and always answers with a
:class:`ToolResult`, never an exception: a bad call is something to tell the model, not a crash.

A parameter annotated :class:`~agentmaestro.tools.context.ToolContext` (any name) is not an argument: it is left out
of the schema and filled by :meth:`Tool.invoke` from its ``context``. ``risk_rules`` lets a tool raise the risk of one
call from its arguments (:meth:`Tool.assess`); the result is never below the tool's own level.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import importlib
import inspect
import json
import logging
import re
import time
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, TypeAlias, overload

import pydantic
from pydantic.fields import FieldInfo
from pydantic.json_schema import PydanticJsonSchemaWarning
from pydantic_core import to_jsonable_python

from agentmaestro.core.messages import ToolSpec
from agentmaestro.core.reconcile import Outcome, Reconciled
from agentmaestro.core.risk import RiskLevel
from agentmaestro.errors import ConfigError, ToolError
from agentmaestro.tools.context import ToolContext
from agentmaestro.tools.redact import redact

__all__ = ["Reconciled", "Reconciler", "RiskRules", "Tool", "ToolRegistry", "ToolResult", "load_tool", "tool"]

logger = logging.getLogger(__name__)

TOOL_THREADS = 40
"""Threads running synchronous tools in one process (as many as anyio's default limiter allowed)."""
_tool_pool: ThreadPoolExecutor | None = None


def _tool_threads() -> ThreadPoolExecutor:
    """The process-wide pool for synchronous tools (a plain executor: anyio's per-call machinery cost ~3x more)."""
    global _tool_pool
    if _tool_pool is None:
        _tool_pool = ThreadPoolExecutor(max_workers=TOOL_THREADS, thread_name_prefix="maestro-tool")
    return _tool_pool


DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_OUTPUT_CHARS = 20_000

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MODEL_CONFIG = pydantic.ConfigDict(extra="forbid", protected_namespaces=())
_MAX_ERRORS_SHOWN = 10

RiskRules: TypeAlias = Callable[[Mapping[str, Any], ToolContext | None], tuple[RiskLevel | str | int, Iterable[str]]]
"""``(arguments, context) -> (level, reasons)``: raises the risk of one call; see :meth:`Tool.assess`."""

Reconciler: TypeAlias = Callable[..., Any]
"""``(arguments, key)`` or ``(arguments, key, context)`` -> :class:`Reconciled` (sync or async); see
:meth:`Tool.reconcile`."""


@dataclass(frozen=True, kw_only=True)
class ToolResult:
    """The outcome of one tool call, as the model will see it."""

    content: str
    """Text handed back to the model: the return value (str as is, anything else as JSON) or an error message."""
    is_error: bool = False
    """True when the arguments were invalid, the tool raised, or it timed out."""
    data: Any = None
    """The raw return value when it is plain JSON (and the content was not truncated), else None."""
    duration_ms: float = 0.0
    """Wall time of validation plus execution, in milliseconds."""


class Tool:
    """A Python callable (sync or async) that a model may call.

    A ``Tool`` is still callable like the function it wraps: ``add(2, 3) == 5``.

    Attributes:
        name: Tool name shown to the model (``[A-Za-z0-9_-]{1,64}``).
        description: What the tool does, shown to the model.
        parameters: JSON schema (type object, ``additionalProperties: false``) of the arguments.
        risk: How much harm a call can do; drives the approval gate.
        idempotent: True when a call can safely be repeated (e.g. after a crash left its outcome unknown).
        timeout_s: Seconds a call may take before it is reported as timed out.
        max_output_chars: Content longer than this is truncated, with a marker saying how much was cut.
        import_path: ``"module:qualname"`` when the function can be imported at module level by another process,
            else None.
        fn: The wrapped callable.
        risk_rules: Optional ``(arguments, context) -> (level, reasons)`` hook used by :meth:`assess`.
        redact_output: Whether secrets are redacted from the content before it is returned (see
            :func:`agentmaestro.tools.redact.redact`).
        needs_context: True when the function takes a :class:`ToolContext` parameter without a default.
        uses_context: True when the function takes a :class:`ToolContext` parameter at all.
        reconciler: Optional function telling whether an interrupted call happened (see :meth:`reconcile`).
        idempotency_key: True when the tool hands ``ToolContext.idempotency_key`` to the service it calls, which
            performs a call with the same key at most once: after a crash the call may be made again.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    risk: RiskLevel
    idempotent: bool
    timeout_s: float
    max_output_chars: int
    import_path: str | None
    fn: Callable[..., Any]
    risk_rules: RiskRules | None
    redact_output: bool
    needs_context: bool
    uses_context: bool
    reconciler: Reconciler | None
    idempotency_key: bool

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        risk: RiskLevel | str | int = RiskLevel.SAFE,
        idempotent: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
        risk_rules: RiskRules | None = None,
        redact_output: bool = False,
        reconcile: Reconciler | None = None,
        idempotency_key: bool = False,
    ) -> None:
        """Wrap ``fn``; see :func:`tool` for the arguments.

        Raises:
            ConfigError: The function cannot be described to a model (no name, no description, unsupported
                parameters, unresolvable type hints) or a setting is out of range.
        """
        if not callable(fn):
            raise ConfigError(f"a tool must wrap a callable, got {fn!r}")
        if isinstance(fn, Tool):
            fn = fn.fn
        tool_name = name if name is not None else getattr(fn, "__name__", None)
        if not isinstance(tool_name, str) or not _NAME_RE.match(tool_name):
            raise ConfigError(f"invalid tool name {tool_name!r}: use 1-64 letters, digits, '_' or '-'")
        doc = inspect.getdoc(fn) or ""
        desc = (description if description is not None else _first_paragraph(doc)).strip()
        if not desc:
            raise ConfigError(f"tool {tool_name!r} needs a description: give it a docstring or description=...")
        if risk_rules is not None and not callable(risk_rules):
            raise ConfigError(f"tool {tool_name!r}: risk_rules must be callable, got {risk_rules!r}")
        self._reconcile_context = _reconciler_takes_context(reconcile, tool_name)
        if timeout_s <= 0:
            raise ConfigError(f"tool {tool_name!r}: timeout_s must be positive, got {timeout_s!r}")
        if max_output_chars <= 0:
            raise ConfigError(f"tool {tool_name!r}: max_output_chars must be positive, got {max_output_chars!r}")
        try:
            risk_level = RiskLevel.parse(risk)
        except ValueError as exc:
            raise ConfigError(f"tool {tool_name!r}: {exc}") from exc

        self.fn = fn
        self.name = tool_name
        self.description = desc
        self.risk = risk_level
        self.idempotent = idempotent
        self.timeout_s = float(timeout_s)
        self.max_output_chars = max_output_chars
        self.import_path = _import_path(fn)
        self.risk_rules = risk_rules
        self.redact_output = redact_output
        self.reconciler = reconcile
        self.idempotency_key = bool(idempotency_key)
        self._is_async = _is_async_callable(fn)
        self._model, self._params = _arguments_model(fn, tool_name, _docstring_args(doc))
        self.needs_context = any(p.context and p.default is inspect.Parameter.empty for p in self._params)
        self.uses_context = any(p.context for p in self._params)
        self.parameters = _json_schema(self._model)
        self.__name__ = getattr(fn, "__name__", tool_name)
        self.__qualname__ = getattr(fn, "__qualname__", tool_name)
        self.__module__ = getattr(fn, "__module__", __name__)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped function directly, bypassing validation, timeout and result formatting."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r}, risk={self.risk.name}, idempotent={self.idempotent})"

    def spec(self) -> ToolSpec:
        """What the model is told about this tool: built once from a copy of :attr:`parameters`; read-only."""
        cached: ToolSpec | None = getattr(self, "_spec", None)
        if cached is None or (cached.name, cached.description) != (self.name, self.description):  # renamed copies
            cached = ToolSpec(name=self.name, description=self.description, parameters=copy.deepcopy(self.parameters))
            self._spec = cached
        return cached

    def assess(self, arguments: Mapping[str, Any], context: ToolContext | None = None) -> tuple[RiskLevel, list[str]]:
        """The risk of one call: the tool's level, raised (never lowered) by its ``risk_rules``.

        A rule that raises or answers nonsense fails closed: the call is DANGEROUS, with a reason saying why.

        Args:
            arguments: The arguments as the model proposed them (not yet validated: rules must be defensive).
            context: The call's context, when known.

        Returns:
            ``(level, reasons)``: the effective risk level and the rule's reasons (empty without rules).
        """
        if self.risk_rules is None:
            return self.risk, []
        try:
            raw_level, raw_reasons = self.risk_rules(arguments, context)
            level = RiskLevel.parse(raw_level)
            reasons = [str(r) for r in raw_reasons]
        except Exception as exc:
            logger.warning("risk rules of tool %r failed", self.name, exc_info=True)
            return RiskLevel.DANGEROUS, [
                f"risk rules of {self.name!r} failed ({type(exc).__name__}): treated as DANGEROUS"
            ]
        return max(self.risk, level), reasons

    async def invoke(self, arguments: dict[str, Any], context: ToolContext | None = None) -> ToolResult:
        """Validate ``arguments`` strictly, run the tool under its timeout and describe the outcome.

        Never raises for a failing call: invalid arguments, an exception from the tool and a timeout all come back
        as a result with ``is_error=True``. Cancellation of the caller still propagates.

        Args:
            arguments: Decoded JSON arguments, as the model proposed them.
            context: Facts about the call, passed to a parameter annotated ``ToolContext``; a tool that declares
                one answers with an error result when it is missing.

        Returns:
            The result to hand back to the model.
        """
        started = time.perf_counter()

        def done(content: str, *, is_error: bool = False, data: Any = None) -> ToolResult:
            if self.redact_output:
                redacted = redact(content)
                if redacted != content:
                    content, data = redacted, None
            text, truncated = _truncate(content, self.max_output_chars)
            return ToolResult(
                content=text,
                is_error=is_error,
                data=None if truncated else data,
                duration_ms=(time.perf_counter() - started) * 1000,
            )

        if self.needs_context and context is None:
            return done(
                f"tool {self.name!r} needs a ToolContext (run, workspace, work folder); none was given", is_error=True
            )
        try:
            args, kwargs = self._validate(arguments, context)
        except pydantic.ValidationError as exc:
            return done(f"invalid arguments for tool {self.name!r}: {_format_errors(exc)}", is_error=True)

        deadline = asyncio.timeout(self.timeout_s)
        try:
            async with deadline:
                value = await self._call(args, kwargs)
        except TimeoutError as exc:
            if deadline.expired():
                return done(f"tool {self.name!r} timed out after {self.timeout_s:g}s", is_error=True)
            return done(_describe_exception(self.name, exc), is_error=True)
        except Exception as exc:
            logger.debug("tool %r raised", self.name, exc_info=True)
            return done(_describe_exception(self.name, exc), is_error=True)
        return done(_to_content(value), data=_plain_json_or_none(value))

    @property
    def can_reconcile(self) -> bool:
        """Whether the tool has a ``reconcile`` function."""
        return self.reconciler is not None

    async def reconcile(self, arguments: dict[str, Any], key: str, context: ToolContext | None = None) -> Reconciled:
        """Ask the tool whether an interrupted call with these arguments and idempotency key took effect.

        Runs the tool's ``reconcile`` function like a call: sync functions in a worker thread, under the tool's
        timeout. Never raises for a failing function: no function, an exception, a timeout or an answer that is not
        a :class:`Reconciled` all come back as CANNOT_TELL with the reason. A HAPPENED result is turned into the text
        the model will see, as :meth:`invoke` does (redacted when the tool redacts, size-capped).
        """
        if self.reconciler is None:
            return Reconciled.cannot_tell(f"tool {self.name!r} has no reconcile function")
        call_args: list[Any] = [dict(arguments), key]
        if self._reconcile_context:
            call_args.append(context)
        deadline = asyncio.timeout(self.timeout_s)
        try:
            async with deadline:
                if _is_async_callable(self.reconciler):
                    answer = await self.reconciler(*call_args)
                else:
                    call = functools.partial(contextvars.copy_context().run, self.reconciler, *call_args)
                    answer = await asyncio.get_running_loop().run_in_executor(_tool_threads(), call)
                    if inspect.isawaitable(answer):
                        answer = await answer
        except TimeoutError as exc:
            if deadline.expired():
                return Reconciled.cannot_tell(f"reconcile of {self.name!r} timed out after {self.timeout_s:g}s")
            return Reconciled.cannot_tell(_describe_exception(f"reconcile of {self.name!r}", exc))
        except Exception as exc:
            logger.debug("reconcile of tool %r raised", self.name, exc_info=True)
            return Reconciled.cannot_tell(_describe_exception(f"reconcile of {self.name!r}", exc))
        if not isinstance(answer, Reconciled):
            return Reconciled.cannot_tell(
                f"reconcile of {self.name!r} answered {type(answer).__name__}, not Reconciled"
            )
        reason = str(answer.reason)[:1000]
        if self.redact_output:
            reason = redact(reason)
        if answer.outcome is not Outcome.HAPPENED:
            return Reconciled(outcome=answer.outcome, reason=reason)
        content = _to_content(answer.result)
        if self.redact_output:
            content = redact(content)
        return Reconciled.happened(_truncate(content, self.max_output_chars)[0], reason)

    def _validate(self, arguments: Any, context: ToolContext | None = None) -> tuple[list[Any], dict[str, Any]]:
        """Validate JSON-ish arguments strictly; return positional and keyword arguments for the function."""
        try:
            payload = json.dumps(arguments)
        except (TypeError, ValueError):
            # Not plain JSON (called from Python with rich values): validate the Python objects, still strictly.
            validated = self._model.model_validate(arguments, strict=True)
        else:
            # JSON-mode strict validation: "2" is not an int and false is not 0, but 2 is a float and
            # "2024-01-01" is a date, exactly as a model sending JSON would expect.
            validated = self._model.model_validate_json(payload, strict=True)
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for param in self._params:
            if param.context:
                value = param.default if context is None else context
            else:
                value = getattr(validated, param.field)
            if param.positional_only:
                args.append(value)
            else:
                kwargs[param.name] = value
        return args, kwargs

    async def _call(self, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if self._is_async:
            return await self.fn(*args, **kwargs)
        # The thread cannot be killed on timeout; it is abandoned and finishes in the background.
        # The caller's context variables (tracing, ...) go along, as with asyncio.to_thread.
        call = functools.partial(contextvars.copy_context().run, self.fn, *args, **kwargs)
        value = await asyncio.get_running_loop().run_in_executor(_tool_threads(), call)
        if inspect.isawaitable(value):
            value = await value
        return value


@overload
def tool(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    risk: RiskLevel | str | int = RiskLevel.SAFE,
    idempotent: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    risk_rules: RiskRules | None = None,
    redact_output: bool = False,
    reconcile: Reconciler | None = None,
    idempotency_key: bool = False,
) -> Tool: ...


@overload
def tool(
    fn: None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    risk: RiskLevel | str | int = RiskLevel.SAFE,
    idempotent: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    risk_rules: RiskRules | None = None,
    redact_output: bool = False,
    reconcile: Reconciler | None = None,
    idempotency_key: bool = False,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    risk: RiskLevel | str | int = RiskLevel.SAFE,
    idempotent: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    risk_rules: RiskRules | None = None,
    redact_output: bool = False,
    reconcile: Reconciler | None = None,
    idempotency_key: bool = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a :class:`Tool` from a function; usable as ``@tool`` and as ``@tool(risk=RiskLevel.DANGEROUS)``.

    Parameter types come from the type hints; ``Annotated[int, Field(description=...)]`` and a Google-style
    ``Args:`` section in the docstring describe parameters. A parameter annotated ``ToolContext`` receives the call's
    context and is hidden from the model. The returned tool is still callable like the function.

    Args:
        fn: The function (sync or async) to wrap; omit it to get a decorator.
        name: Tool name; defaults to the function's ``__name__``.
        description: Tool description; defaults to the first paragraph of the docstring.
        risk: Risk level of a call.
        idempotent: Whether repeating a call is harmless.
        timeout_s: Seconds a call may take.
        max_output_chars: Content cap; longer output is truncated with a marker.
        risk_rules: ``(arguments, context) -> (level, reasons)``, raising the risk of a call from its arguments
            (for example shell patterns); the effective level is ``max(risk, level)``.
        redact_output: Redact secrets (API keys, tokens, private keys, the worker's secret env values) from the
            content before the model sees it.
        reconcile: ``(arguments, key)`` or ``(arguments, key, context)`` -> :class:`Reconciled`: after a crash
            interrupted a call of this (non-idempotent) tool, tells whether it happened (with its result), did not
            happen, or cannot tell; ``key`` is the call's idempotency key. See :meth:`Tool.reconcile`.
        idempotency_key: The tool passes ``ToolContext.idempotency_key`` to the service it calls, which performs a
            call with the same key at most once; after a crash whose outcome nobody can tell, the call is made again
            with the same key instead of asking a person.

    Returns:
        The tool, or a decorator producing it when ``fn`` is omitted.

    Raises:
        ConfigError: The function has no docstring and no description was given, or it cannot be described.
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(
            f,
            name=name,
            description=description,
            risk=risk,
            idempotent=idempotent,
            timeout_s=timeout_s,
            max_output_chars=max_output_chars,
            risk_rules=risk_rules,
            redact_output=redact_output,
            reconcile=reconcile,
            idempotency_key=idempotency_key,
        )

    return wrap if fn is None else wrap(fn)


class ToolRegistry:
    """Tools by unique name."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] = ()) -> None:
        """Create a registry, registering ``tools`` in order."""
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.register(t)

    def register(self, tool_or_fn: Tool | Callable[..., Any]) -> Tool:
        """Add a tool; a plain function is wrapped with the :func:`tool` defaults.

        Returns:
            The registered tool.

        Raises:
            ConfigError: A tool with the same name is already registered.
        """
        t = tool_or_fn if isinstance(tool_or_fn, Tool) else Tool(tool_or_fn)
        if t.name in self._tools:
            raise ConfigError(f"duplicate tool name {t.name!r}")
        self._tools[t.name] = t
        return t

    def get(self, name: str) -> Tool:
        """The tool called ``name``.

        Raises:
            ToolError: No such tool; the message lists the known names.
        """
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "(none)"
            raise ToolError(f"unknown tool {name!r}; known tools: {known}") from None

    def names(self) -> list[str]:
        """Registered tool names, in registration order."""
        return list(self._tools)

    def specs(self) -> list[ToolSpec]:
        """Specs of all tools, in registration order."""
        return [t.spec() for t in self._tools.values()]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"ToolRegistry({self.names()!r})"


def load_tool(import_path: str) -> Tool:
    """Import a tool from ``"package.module:attr"`` (``attr`` may be dotted).

    The attribute may be a :class:`Tool` or a plain function, which is wrapped with the :func:`tool` defaults.

    Raises:
        ConfigError: Malformed path, module or attribute missing, import failing, or not callable.
    """
    module_name, sep, attr_path = import_path.partition(":")
    module_name, attr_path = module_name.strip(), attr_path.strip()
    if not sep or not module_name or not attr_path:
        raise ConfigError(f"invalid tool import path {import_path!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigError(f"cannot load tool {import_path!r}: no module named {exc.name!r}") from exc
        raise ConfigError(f"cannot load tool {import_path!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise ConfigError(
            f"cannot load tool {import_path!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"cannot load tool {import_path!r}: {module_name!r} has no attribute {attr_path!r}"
            ) from None
    if isinstance(obj, Tool):
        return obj
    if not callable(obj):
        raise ConfigError(f"cannot load tool {import_path!r}: {attr_path!r} is not callable")
    return Tool(obj)


# --- helpers ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Param:
    name: str
    """Parameter name in the function signature (and in the JSON schema)."""
    field: str
    """Field name in the pydantic model (differs when the name would clash with pydantic)."""
    positional_only: bool
    context: bool = False
    """True for the parameter that receives the :class:`ToolContext` (not part of the model)."""
    default: Any = inspect.Parameter.empty
    """Default of a context parameter (``ctx: ToolContext | None = None`` makes the context optional)."""


def _arguments_model(
    fn: Callable[..., Any], tool_name: str, doc_args: dict[str, str]
) -> tuple[type[pydantic.BaseModel], list[_Param]]:
    """Build the pydantic model of ``fn``'s arguments from its signature and type hints."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"tool {tool_name!r}: cannot read the signature of {fn!r}: {exc}") from exc
    try:
        hints = _type_hints(fn)
    except Exception as exc:
        raise ConfigError(
            f"tool {tool_name!r}: cannot resolve type hints ({type(exc).__name__}: {exc}); "
            "define the types it uses at module level"
        ) from exc

    fields: dict[str, Any] = {}
    params: list[_Param] = []
    for index, p in enumerate(signature.parameters.values()):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ConfigError(f"tool {tool_name!r}: *args and **kwargs are not supported ({p.name!r})")
        annotation = hints.get(p.name, Any)
        if _is_context_annotation(annotation):
            params.append(
                _Param(
                    name=p.name, field="", positional_only=p.kind is p.POSITIONAL_ONLY, context=True, default=p.default
                )
            )
            continue
        field_name = p.name
        if p.name.startswith("_") or hasattr(pydantic.BaseModel, p.name):
            field_name = f"arg{index}"  # the schema still uses the real name, through the alias
        if isinstance(p.default, FieldInfo):
            info: FieldInfo = p.default
        elif p.default is inspect.Parameter.empty:
            info = pydantic.Field()
        else:
            info = pydantic.Field(default=p.default)
        extra: dict[str, Any] = {}
        if field_name != p.name:
            extra["alias"] = p.name
        if info.description is None and p.name in doc_args and not _annotated_description(annotation):
            extra["description"] = doc_args[p.name]
        if extra:
            annotation = Annotated[annotation, pydantic.Field(**extra)]
        fields[field_name] = (annotation, info)
        params.append(_Param(name=p.name, field=field_name, positional_only=p.kind is p.POSITIONAL_ONLY))

    try:
        model = pydantic.create_model(f"{tool_name}_arguments", __config__=_MODEL_CONFIG, **fields)
    except Exception as exc:
        raise ConfigError(f"tool {tool_name!r}: unsupported parameter types: {exc}") from exc
    return model, params


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else getattr(fn, "__call__", fn)  # noqa: B004
    target = inspect.unwrap(target)
    return typing.get_type_hints(target, include_extras=True)


def _is_context_annotation(annotation: Any) -> bool:
    """True for ``ToolContext``, ``ToolContext | None`` and ``Annotated[ToolContext, ...]``."""
    if annotation is ToolContext:
        return True
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _is_context_annotation(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(members) == 1 and _is_context_annotation(members[0])
    return False


def _annotated_description(annotation: Any) -> bool:
    """True when ``Annotated[..., Field(description=...)]`` already describes the parameter."""
    return any(isinstance(m, FieldInfo) and m.description for m in getattr(annotation, "__metadata__", ()))


def _json_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    with warnings.catch_warnings():
        # A default that is not JSON-serialisable is left out of the schema; that is fine, not an error.
        warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
        try:
            schema = model.model_json_schema()
        except Exception as exc:
            raise ConfigError(f"cannot build a JSON schema for {model.__name__}: {exc}") from exc
    cleaned = _strip_titles(schema)
    assert isinstance(cleaned, dict)
    cleaned["type"] = "object"
    cleaned.setdefault("properties", {})
    cleaned["additionalProperties"] = False
    return cleaned


_SCHEMA_MAPS = frozenset({"properties", "$defs", "definitions", "patternProperties", "dependentSchemas"})


def _strip_titles(node: Any, *, is_map: bool = False) -> Any:
    """Drop generated ``title`` keys from a JSON schema, keeping properties that happen to be called "title"."""
    if isinstance(node, dict):
        if is_map:
            return {k: _strip_titles(v) for k, v in node.items()}
        return {
            k: _strip_titles(v, is_map=k in _SCHEMA_MAPS)
            for k, v in node.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def _first_paragraph(doc: str) -> str:
    paragraph = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0]
    return " ".join(line.strip() for line in paragraph.splitlines()).strip()


_ARGS_HEADER = re.compile(r"^(Args|Arguments|Parameters):\s*$")
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _docstring_args(doc: str) -> dict[str, str]:
    """Parameter descriptions from a Google-style ``Args:`` section."""
    out: dict[str, str] = {}
    lines = doc.splitlines()
    i = 0
    while i < len(lines) and not _ARGS_HEADER.match(lines[i].strip()):
        i += 1
    current: str | None = None
    base_indent: int | None = None
    for line in lines[i + 1 :]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if base_indent is None:
            base_indent = indent
        if indent < base_indent or (indent == 0 and line.rstrip().endswith(":")):
            break
        if indent == base_indent and (m := _ARG_LINE.match(line.strip())):
            current = m.group(1).lstrip("*")
            out[current] = m.group(2).strip()
        elif current is not None and indent > base_indent:
            out[current] = f"{out[current]} {line.strip()}".strip()
    return {k: v for k, v in out.items() if v}


def _import_path(fn: Callable[..., Any]) -> str | None:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    if module == "__main__" or "<" in qualname:  # <locals>, <lambda>: not importable elsewhere
        return None
    return f"{module}:{qualname}"


def _reconciler_takes_context(reconcile: Reconciler | None, tool_name: str) -> bool:
    """Whether ``reconcile`` takes a third argument (the call's context); ConfigError when it takes neither 2 nor 3."""
    if reconcile is None:
        return False
    if not callable(reconcile):
        raise ConfigError(f"tool {tool_name!r}: reconcile must be callable, got {reconcile!r}")
    try:
        params = list(inspect.signature(reconcile).parameters.values())
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"tool {tool_name!r}: cannot read the signature of reconcile: {exc}") from exc
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is inspect.Parameter.empty]
    if len(required) <= 3 and (any(p.kind is p.VAR_POSITIONAL for p in params) or len(positional) >= 3):
        return True
    if len(positional) == 2:
        return False
    raise ConfigError(f"tool {tool_name!r}: reconcile must take (arguments, key) or (arguments, key, context)")


def _is_async_callable(fn: Callable[..., Any]) -> bool:
    while hasattr(fn, "func") and not inspect.isfunction(fn):  # functools.partial
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def _format_errors(exc: pydantic.ValidationError) -> str:
    parts: list[str] = []
    errors = exc.errors(include_url=False)
    for err in errors[:_MAX_ERRORS_SHOWN]:
        loc = ".".join(str(x) for x in err["loc"]) or "arguments"
        kind = err["type"]
        if kind == "missing":
            parts.append(f"{loc}: missing required argument")
        elif kind == "extra_forbidden":
            parts.append(f"{loc}: unexpected argument")
        else:
            got = repr(err.get("input"))
            if len(got) > 60:
                got = got[:57] + "..."
            parts.append(f"{loc}: {err['msg']} (got {got})")
    if len(errors) > _MAX_ERRORS_SHOWN:
        parts.append(f"and {len(errors) - _MAX_ERRORS_SHOWN} more")
    return "; ".join(parts)


def _describe_exception(tool_name: str, exc: BaseException) -> str:
    message = str(exc).strip()
    if isinstance(exc, ToolError) and message:
        return f"{tool_name} failed: {message}"  # a tool's own, deliberate error message
    kind = type(exc).__name__
    return f"{tool_name} raised {kind}: {message}" if message else f"{tool_name} raised {kind}"


def _to_content(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        # Handles pydantic models (as model_dump(mode="json")), dataclasses, datetimes, enums, sets...
        return json.dumps(to_jsonable_python(value, fallback=str), ensure_ascii=False)
    except Exception:
        try:
            return json.dumps(value, ensure_ascii=False, default=str)
        except Exception:
            return str(value)


def _plain_json_or_none(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return value


def _truncate(content: str, limit: int) -> tuple[str, bool]:
    if len(content) <= limit:
        return content, False
    return f"{content[:limit]}\n[truncated {len(content) - limit} chars]", True
