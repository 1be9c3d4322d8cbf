from __future__ import annotations

import asyncio
import datetime
import enum
import time
from typing import Annotated, Any

import pydantic
import pytest
from pydantic import Field

from agentmaestro.core.messages import ToolSpec
from agentmaestro.core.risk import RiskLevel
from agentmaestro.errors import ConfigError, ToolError
from agentmaestro.tools import Tool, ToolRegistry, ToolResult, load_tool, tool

# --- module-level tools (importable, for import_path and load_tool) -----------------------------------------------


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool(risk=RiskLevel.DANGEROUS, idempotent=True, timeout_s=5)
async def scale(x: float, factor: float = 2.0) -> float:
    """Scale a number.

    Longer explanation that is not part of the description.
    """
    return x * factor


def plain_upper(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


NOT_CALLABLE = 42


class Helpers:
    @staticmethod
    def double(x: int) -> int:
        """Double a number."""
        return 2 * x


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(pydantic.BaseModel):
    x: int
    y: int


@tool
def search(
    query: Annotated[str, Field(description="What to look for.")],
    limit: int = 10,
    tags: list[str] | None = None,
    color: Color = Color.RED,
    since: datetime.date | None = None,
    json: bool = False,
    title: str = "untitled",
) -> dict[str, Any]:
    """Search the catalogue.

    Args:
        query: Ignored here: the Annotated description wins.
        limit: Maximum number of
            results to return.
        tags: Only items with all these tags.
    """
    return {
        "query": query,
        "limit": limit,
        "tags": tags,
        "color": color.value,
        "since": since.isoformat() if since else None,
        "json": json,
        "title": title,
    }


def invoke(t: Tool, arguments: dict[str, Any]) -> ToolResult:
    return asyncio.run(t.invoke(arguments))


# --- schema ---------------------------------------------------------------------------------------------------------


def test_schema_from_type_hints() -> None:
    schema = search.parameters
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["query"]
    props = schema["properties"]
    assert list(props) == ["query", "limit", "tags", "color", "since", "json", "title"]
    assert props["query"] == {"type": "string", "description": "What to look for."}
    assert props["limit"] == {"type": "integer", "default": 10, "description": "Maximum number of results to return."}
    assert props["tags"]["default"] is None
    assert {"type": "array", "items": {"type": "string"}} in props["tags"]["anyOf"]
    assert {"type": "null"} in props["tags"]["anyOf"]
    assert props["tags"]["description"] == "Only items with all these tags."
    assert props["color"]["default"] == "red"
    assert schema["$defs"]["Color"] == {"type": "string", "enum": ["red", "blue"]}
    assert props["json"] == {"type": "boolean", "default": False}
    # a parameter called "title" survives the removal of generated titles
    assert props["title"] == {"type": "string", "default": "untitled"}
    assert "title" not in schema


def test_schema_simple_and_spec() -> None:
    assert add.parameters == {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    }
    spec = add.spec()
    assert isinstance(spec, ToolSpec)
    assert spec.name == "add"
    assert spec.description == "Add two integers."
    spec.parameters["properties"].clear()  # a copy: the tool is unaffected
    assert add.parameters["properties"]


def test_no_parameters_schema() -> None:
    @tool
    def now() -> str:
        """Current time."""
        return "noon"

    assert now.parameters == {"type": "object", "properties": {}, "additionalProperties": False}
    assert invoke(now, {}).content == "noon"


def test_description_from_first_paragraph_or_explicit() -> None:
    assert scale.description == "Scale a number."

    @tool(description="Explicit words.")
    def f(x: int) -> int:
        return x

    assert f.description == "Explicit words."


def test_missing_description_is_config_error() -> None:
    def undocumented(x: int) -> int:
        return x

    with pytest.raises(ConfigError, match="description"):
        tool(undocumented)


def test_unsupported_signatures_are_config_errors() -> None:
    def star(*args: int) -> int:
        """Sum."""
        return sum(args)

    with pytest.raises(ConfigError, match=r"\*args"):
        tool(star)
    with pytest.raises(ConfigError, match="invalid tool name"):
        tool(name="has space", description="x")(lambda: 1)
    with pytest.raises(ConfigError, match="timeout_s"):
        tool(timeout_s=0)(plain_upper)


def test_attributes_and_import_path() -> None:
    assert add.risk is RiskLevel.SAFE and add.idempotent is False and add.timeout_s == 60.0
    assert add.max_output_chars == 20_000
    assert scale.risk is RiskLevel.DANGEROUS and scale.idempotent is True and scale.timeout_s == 5.0
    assert add.import_path == f"{__name__}:add"

    @tool
    def local(x: int) -> int:
        """Local."""
        return x

    assert local.import_path is None
    assert tool(risk="elevated")(plain_upper).risk is RiskLevel.ELEVATED


# --- strict validation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"a": "2", "b": 3}, "a: Input should be a valid integer (got '2')"),
        ({"a": False, "b": 3}, "a: Input should be a valid integer (got False)"),
        ({"a": 1.5, "b": 3}, "a: Input should be a valid integer"),
        ({"a": 1, "b": 2, "c": 3}, "c: unexpected argument"),
        ({"a": 1}, "b: missing required argument"),
    ],
)
def test_invalid_arguments_are_error_results(arguments: dict[str, Any], expected: str) -> None:
    result = invoke(add, arguments)
    assert result.is_error
    assert result.content.startswith("invalid arguments for tool 'add': ")
    assert expected in result.content
    assert result.data is None


def test_several_errors_are_listed_concisely() -> None:
    result = invoke(add, {"a": "1", "c": 0})
    assert result.content == (
        "invalid arguments for tool 'add': a: Input should be a valid integer (got '1'); "
        "b: missing required argument; c: unexpected argument"
    )


def test_json_ish_inputs_are_accepted() -> None:
    assert invoke(scale, {"x": 3}).data == 6.0  # int for float
    result = invoke(search, {"query": "q", "color": "blue", "since": "2024-05-01", "json": True, "tags": ["a"]})
    assert not result.is_error, result.content
    assert result.data["color"] == "blue"
    assert result.data["since"] == "2024-05-01"
    assert result.data["json"] is True
    assert invoke(search, {"query": "q", "color": "green"}).is_error


def test_nested_models_are_validated() -> None:
    @tool
    def norm(p: Point) -> int:
        """Manhattan norm."""
        return abs(p.x) + abs(p.y)

    assert norm.parameters["properties"]["p"] == {"$ref": "#/$defs/Point"}
    assert invoke(norm, {"p": {"x": 3, "y": -4}}).content == "7"
    assert invoke(norm, {"p": {"x": "3", "y": -4}}).is_error


def test_positional_only_and_reserved_names() -> None:
    @tool
    def f(a: int, /, _hidden: int = 1, schema: str = "s") -> str:
        """Combine."""
        return f"{a}-{_hidden}-{schema}"

    assert set(f.parameters["properties"]) == {"a", "_hidden", "schema"}
    assert invoke(f, {"a": 1, "_hidden": 2, "schema": "x"}).content == "1-2-x"


def test_non_json_python_arguments_still_strict() -> None:
    @tool
    def when(d: datetime.date) -> str:
        """Day."""
        return d.isoformat()

    assert invoke(when, {"d": datetime.date(2024, 1, 2)}).content == "2024-01-02"
    assert invoke(when, {"d": object()}).is_error


# --- execution ------------------------------------------------------------------------------------------------------


def test_sync_and_async_tools() -> None:
    result = invoke(add, {"a": 2, "b": 3})
    assert result == ToolResult(content="5", data=5, duration_ms=result.duration_ms)
    assert result.duration_ms >= 0
    assert invoke(scale, {"x": 1.5, "factor": 3}).content == "4.5"


def test_sync_tools_run_off_the_event_loop() -> None:
    @tool
    def blocking() -> str:
        """Detect a running loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return "thread"
        return "loop"

    assert invoke(blocking, {}).content == "thread"


def test_exception_becomes_error_result_without_traceback() -> None:
    @tool
    def boom(x: int) -> int:
        """Fail."""
        raise ValueError(f"bad input {x}")

    result = invoke(boom, {"x": 7})
    assert result == ToolResult(
        content="boom raised ValueError: bad input 7", is_error=True, duration_ms=result.duration_ms
    )
    assert "Traceback" not in result.content

    @tool
    async def aboom() -> None:
        """Fail without a message."""
        raise KeyError

    assert invoke(aboom, {}).content == "aboom raised KeyError"


def test_async_timeout() -> None:
    @tool(timeout_s=0.05)
    async def slow() -> str:
        """Sleep."""
        await asyncio.sleep(5)
        return "late"

    started = time.perf_counter()
    result = invoke(slow, {})
    assert time.perf_counter() - started < 2
    assert result.is_error
    assert result.content == "tool 'slow' timed out after 0.05s"


def test_sync_timeout_abandons_the_thread() -> None:
    @tool(timeout_s=0.05)
    def slow_sync() -> str:
        """Sleep in a thread."""
        time.sleep(0.3)
        return "late"

    result = invoke(slow_sync, {})
    assert result.content == "tool 'slow_sync' timed out after 0.05s"
    assert result.is_error


def test_timeout_error_raised_by_the_tool_is_not_our_timeout() -> None:
    @tool
    async def own_timeout() -> None:
        """Raise TimeoutError."""
        raise TimeoutError("upstream took too long")

    assert invoke(own_timeout, {}).content == "own_timeout raised TimeoutError: upstream took too long"


def test_return_values_become_content() -> None:
    @tool
    def as_dict() -> dict[str, Any]:
        """Dict."""
        return {"a": 1, "é": [1.5, None]}

    @tool
    def as_model() -> Point:
        """Model."""
        return Point(x=1, y=2)

    @tool
    def as_other() -> Any:
        """Not JSON."""
        return {"when": datetime.date(2024, 1, 2)}

    @tool
    def as_none() -> None:
        """Nothing."""

    r = invoke(as_dict, {})
    assert r.content == '{"a": 1, "é": [1.5, null]}' and r.data == {"a": 1, "é": [1.5, None]}
    r = invoke(as_model, {})
    assert r.content == '{"x": 1, "y": 2}' and r.data is None
    r = invoke(as_other, {})
    assert r.content == '{"when": "2024-01-02"}' and r.data is None
    r = invoke(as_none, {})
    assert r.content == "null" and not r.is_error


def test_output_is_truncated_with_marker() -> None:
    @tool(max_output_chars=10)
    def chatty() -> str:
        """Talk a lot."""
        return "x" * 50

    result = invoke(chatty, {})
    assert result.content == "x" * 10 + "\n[truncated 40 chars]"
    assert result.data is None
    assert not result.is_error
    assert invoke(tool(max_output_chars=50)(chatty.fn), {}).data == "x" * 50


# --- decorator forms ------------------------------------------------------------------------------------------------


def test_decorator_forms_and_passthrough_call() -> None:
    assert isinstance(add, Tool)
    assert add(2, 3) == 5
    assert add.__name__ == "add" and add.__doc__ == "Add two integers."
    assert asyncio.run(scale(2.0)) == 4.0

    wrapped = tool(plain_upper, name="shout", idempotent=True)
    assert wrapped.name == "shout" and wrapped.idempotent
    assert wrapped("hi") == "HI"

    assert repr(add) == "Tool(name='add', risk=SAFE, idempotent=False)"


# --- registry -------------------------------------------------------------------------------------------------------


def test_registry() -> None:
    registry = ToolRegistry([add])
    upper = registry.register(plain_upper)
    assert isinstance(upper, Tool) and upper.name == "plain_upper"
    assert registry.names() == ["add", "plain_upper"]
    assert "add" in registry and "nope" not in registry
    assert list(registry) == [add, upper]
    assert len(registry) == 2
    assert registry.get("add") is add
    assert [s.name for s in registry.specs()] == ["add", "plain_upper"]


def test_registry_errors() -> None:
    registry = ToolRegistry([add, scale])
    with pytest.raises(ConfigError, match="duplicate tool name 'add'"):
        registry.register(tool(name="add", description="Another add.")(plain_upper))
    with pytest.raises(ToolError, match=r"unknown tool 'sub'; known tools: add, scale"):
        registry.get("sub")
    with pytest.raises(ToolError, match=r"known tools: \(none\)"):
        ToolRegistry().get("x")


# --- load_tool ------------------------------------------------------------------------------------------------------


def test_load_tool() -> None:
    assert load_tool(f"{__name__}:add") is add
    loaded = load_tool(f"{__name__}:plain_upper")
    assert isinstance(loaded, Tool)
    assert loaded.name == "plain_upper" and loaded.risk is RiskLevel.SAFE
    assert loaded.import_path == f"{__name__}:plain_upper"
    double = load_tool(f"{__name__}:Helpers.double")
    assert double.name == "double"
    assert invoke(double, {"x": 4}).content == "8"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_colon_here", "expected 'package.module:function'"),
        (f"{__name__}:", "expected 'package.module:function'"),
        ("agentmaestro_no_such_module:f", "no module named 'agentmaestro_no_such_module'"),
        (f"{__name__}:missing", "has no attribute 'missing'"),
        (f"{__name__}:NOT_CALLABLE", "is not callable"),
    ],
)
def test_load_tool_errors(path: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_tool(path)
