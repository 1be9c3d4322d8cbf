"""A small, safe expression language for workflow conditions and input templates. Never ``eval``.

Expressions use Python syntax, parsed with :mod:`ast` in eval mode, and are evaluated by walking an
allow-list of node types:

- constants (strings, numbers, ``True``/``False``/``None``, also spelled ``true``/``false``/``null``);
- names, which resolve only into the context (``input``, ``context``, ``nodes``, ``iteration``);
- ``a.b`` and ``a["b"]`` into mappings, ``a[0]`` into lists;
- comparisons (``== != < <= > >= in``, ``not in``), ``and``, ``or``, ``not``, ``x if c else y``;
- arithmetic (``+ - * / // % **``) on numbers (``+`` also joins two strings), with size limits;
- list literals, and the functions in :data:`FUNCTIONS` (``len``, ``lower``, ``contains``, ...).

Everything else (calls of anything not listed, attributes starting with ``_``, lambdas,
comprehensions, f-strings, walrus, star-args, ...) is rejected with :class:`ExpressionError`.
Templates are text with ``{{ expression }}`` holes.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from agentmaestro.errors import ConfigError

MAX_SOURCE: Final = 2000
"""Longest expression accepted (characters)."""
MAX_NODES: Final = 300
"""Most AST nodes in one expression."""
MAX_INT_BITS: Final = 256
"""Largest integer an arithmetic result may be (bits)."""
MAX_STR: Final = 100_000
"""Longest string a ``+`` may build."""

CONSTANT_NAMES: Final[Mapping[str, Any]] = {"true": True, "false": False, "null": None, "none": None}

TEMPLATE_RE: Final = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


class ExpressionError(ConfigError):
    """An expression is malformed, uses something not allowed, or failed while evaluating."""


def _s(v: Any) -> str:
    if not isinstance(v, str):
        raise ExpressionError(f"expected a string, got {_type(v)}")
    return v


def _contains(haystack: Any, needle: Any) -> bool:
    if isinstance(haystack, str):
        return _s(needle) in haystack
    if isinstance(haystack, list | tuple | dict):
        return needle in haystack
    if haystack is None:
        return False
    raise ExpressionError(f"contains() needs a string, list or mapping, got {_type(haystack)}")


def _len(v: Any) -> int:
    if isinstance(v, str | list | tuple | dict):
        return len(v)
    if v is None:
        return 0
    raise ExpressionError(f"len() needs a string, list or mapping, got {_type(v)}")


def _to_str(v: Any) -> str:
    return render_value(v)


def _to_num(kind: type[int] | type[float]) -> Callable[[Any], Any]:
    def convert(v: Any) -> Any:
        if isinstance(v, str) and len(v) > 100:
            raise ExpressionError(f"{kind.__name__}() of a string longer than 100 characters")
        if not isinstance(v, str | int | float) or isinstance(v, bool) and kind is float:
            raise ExpressionError(f"{kind.__name__}() needs a number or a string, got {_type(v)}")
        try:
            return kind(v.strip() if isinstance(v, str) else v)
        except (ValueError, OverflowError) as exc:
            raise ExpressionError(f"{kind.__name__}({v!r}) failed: {exc}") from None

    return convert


FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = {
    "len": _len,
    "lower": lambda s: _s(s).lower(),
    "upper": lambda s: _s(s).upper(),
    "strip": lambda s: _s(s).strip(),
    "contains": _contains,
    "startswith": lambda s, p: _s(s).startswith(_s(p)),
    "endswith": lambda s, p: _s(s).endswith(_s(p)),
    "str": _to_str,
    "int": _to_num(int),
    "float": _to_num(float),
    "bool": lambda v: truthy(v),
}
"""The only callable names; each checks its argument types."""


def _type(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def truthy(value: Any) -> bool:
    """Truthiness of a value (empty strings, lists and mappings, 0 and null are false)."""
    return bool(value)


def render_value(value: Any) -> str:
    """Text form used in templates: strings as-is, null as empty, lists and mappings as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


# ------------------------------------------------------------------------------------------ parse

_CMP_OPS: Final = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn)
_BIN_OPS: Final = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)
_ALLOWED: Final = (
    ast.Expression,
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.Attribute,
    ast.Subscript,
    ast.Compare,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.BinOp,
    ast.IfExp,
    ast.List,
    ast.Tuple,
    ast.Call,
    *_CMP_OPS,
    *_BIN_OPS,
)


def _describe(node: ast.AST) -> str:
    names = {
        ast.Lambda: "lambda",
        ast.ListComp: "comprehension",
        ast.SetComp: "comprehension",
        ast.DictComp: "comprehension",
        ast.GeneratorExp: "comprehension",
        ast.JoinedStr: "f-string",
        ast.NamedExpr: "assignment (:=)",
        ast.Starred: "star argument",
        ast.Dict: "mapping literal",
        ast.Set: "set literal",
        ast.Await: "await",
        ast.Yield: "yield",
        ast.Slice: "slice",
    }
    return names.get(type(node), type(node).__name__)


def parse(source: str) -> ast.Expression:
    """Parse and check an expression against the allow-list; raise ExpressionError with the reason."""
    if not isinstance(source, str):
        raise ExpressionError(f"an expression is a string, not {_type(source)}")
    text = source.strip()
    if not text:
        raise ExpressionError("empty expression")
    if len(text) > MAX_SOURCE:
        raise ExpressionError(f"expression longer than {MAX_SOURCE} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"invalid expression {text!r}: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError(f"expression {text[:40]!r}... is too deeply nested or malformed") from None
    count = 0
    for node in ast.walk(tree):
        count += 1
        if count > MAX_NODES:
            raise ExpressionError(f"expression has more than {MAX_NODES} parts")
        if not isinstance(node, _ALLOWED):
            raise ExpressionError(f"not allowed in expressions: {_describe(node)} (in {text!r})")
        if isinstance(node, ast.Constant) and not (
            node.value is None or isinstance(node.value, str | int | float | bool)
        ):
            raise ExpressionError(f"not allowed in expressions: constant of type {type(node.value).__name__}")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ExpressionError(f"not allowed in expressions: attribute {node.attr!r} (names starting with '_')")
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            raise ExpressionError(f"not allowed in expressions: name {node.id!r} (names starting with '_')")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                what = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                raise ExpressionError(
                    f"not allowed in expressions: call of {what!r}; functions: {', '.join(sorted(FUNCTIONS))}"
                )
            if node.keywords:
                raise ExpressionError("not allowed in expressions: keyword arguments")
    return tree


def names_used(tree: ast.AST) -> Iterator[tuple[str, ...]]:
    """Dotted paths read by an expression, e.g. ``("nodes", "research", "output")`` (for validation)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not (isinstance(node.ctx, ast.Load) and node.id in FUNCTIONS):
            yield (node.id,)
        elif isinstance(node, ast.Attribute | ast.Subscript):
            parts: list[str] = []
            cur: ast.AST = node
            while True:
                if isinstance(cur, ast.Attribute):
                    parts.append(cur.attr)
                    cur = cur.value
                elif isinstance(cur, ast.Subscript) and isinstance(cur.slice, ast.Constant):
                    parts.append(str(cur.slice.value))
                    cur = cur.value
                else:
                    break
            if isinstance(cur, ast.Name):
                yield (cur.id, *reversed(parts))


def template_expressions(template: str) -> list[str]:
    """The expressions inside a template's ``{{ ... }}`` holes."""
    return [m.group(1) for m in TEMPLATE_RE.finditer(template)]


# --------------------------------------------------------------------------------------- evaluate


def evaluate(source: str | ast.Expression, env: Mapping[str, Any]) -> Any:
    """Evaluate an expression over ``env`` (names resolve only there)."""
    tree = parse(source) if isinstance(source, str) else source
    try:
        return _Evaluator(env).eval(tree.body)
    except ExpressionError:
        raise
    except RecursionError:
        raise ExpressionError("expression is too deeply nested") from None
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, ArithmeticError) as exc:
        raise ExpressionError(f"expression {ast.unparse(tree)!r} failed: {type(exc).__name__}: {exc}") from None


def render(template: str, env: Mapping[str, Any]) -> str:
    """Fill a template's ``{{ expression }}`` holes."""
    return TEMPLATE_RE.sub(lambda m: render_value(evaluate(m.group(1), env)), template)


class _Evaluator:
    def __init__(self, env: Mapping[str, Any]) -> None:
        self.env = env

    def eval(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            if node.id.lower() in CONSTANT_NAMES:
                return CONSTANT_NAMES[node.id.lower()]
            raise ExpressionError(f"unknown name {node.id!r}; known: {', '.join(sorted(self.env))}")
        if isinstance(node, ast.Attribute):
            return self._member(self.eval(node.value), node.attr)
        if isinstance(node, ast.Subscript):
            return self._member(self.eval(node.value), self.eval(node.slice))
        if isinstance(node, ast.BoolOp):
            value: Any = None
            for v in node.values:
                value = self.eval(v)
                if isinstance(node.op, ast.And) and not truthy(value):
                    return value
                if isinstance(node.op, ast.Or) and truthy(value):
                    return value
            return value
        if isinstance(node, ast.UnaryOp):
            operand = self.eval(node.operand)
            if isinstance(node.op, ast.Not):
                return not truthy(operand)
            num = self._number(operand, "unary minus" if isinstance(node.op, ast.USub) else "unary plus")
            return -num if isinstance(node.op, ast.USub) else num
        if isinstance(node, ast.Compare):
            left = self.eval(node.left)
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = self.eval(comp)
                if not self._compare(op, left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.BinOp):
            return self._arith(node.op, self.eval(node.left), self.eval(node.right))
        if isinstance(node, ast.IfExp):
            return self.eval(node.body) if truthy(self.eval(node.test)) else self.eval(node.orelse)
        if isinstance(node, ast.List | ast.Tuple):
            return [self.eval(e) for e in node.elts]
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            fn = FUNCTIONS[node.func.id]
            args = [self.eval(a) for a in node.args]
            try:
                return fn(*args)
            except TypeError:
                raise ExpressionError(f"wrong number of arguments for {node.func.id}()") from None
        raise ExpressionError(f"not allowed in expressions: {_describe(node)}")  # pragma: no cover

    @staticmethod
    def _member(obj: Any, key: Any) -> Any:
        if isinstance(obj, Mapping):
            if not isinstance(key, str):
                raise ExpressionError(f"mapping keys are strings, not {_type(key)}")
            return obj.get(key)
        if isinstance(obj, list | tuple):
            if isinstance(key, bool) or not isinstance(key, int):
                raise ExpressionError(f"list index must be an integer, not {_type(key)}")
            return obj[key] if -len(obj) <= key < len(obj) else None
        if obj is None:
            return None
        raise ExpressionError(f"cannot read {key!r} of a {_type(obj)}")

    @staticmethod
    def _number(v: Any, what: str) -> int | float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ExpressionError(f"{what} needs numbers, got {_type(v)}")
        return v

    def _compare(self, op: ast.cmpop, left: Any, right: Any) -> bool:
        if isinstance(op, ast.Eq):
            return bool(left == right)
        if isinstance(op, ast.NotEq):
            return bool(left != right)
        if isinstance(op, ast.In | ast.NotIn):
            found = _contains(right, left) if not isinstance(right, str) or isinstance(left, str) else False
            return found if isinstance(op, ast.In) else not found
        if type(left) is not type(right) and not (
            isinstance(left, int | float) and isinstance(right, int | float) and not isinstance(left, bool)
        ):
            raise ExpressionError(f"cannot order {_type(left)} and {_type(right)}")
        if not isinstance(left, str | int | float):
            raise ExpressionError(f"cannot order values of type {_type(left)}")
        if isinstance(op, ast.Lt):
            return bool(left < right)
        if isinstance(op, ast.LtE):
            return bool(left <= right)
        if isinstance(op, ast.Gt):
            return bool(left > right)
        return bool(left >= right)

    def _arith(self, op: ast.operator, left: Any, right: Any) -> Any:
        if isinstance(op, ast.Add) and isinstance(left, str) and isinstance(right, str):
            if len(left) + len(right) > MAX_STR:
                raise ExpressionError(f"string longer than {MAX_STR} characters")
            return left + right
        a, b = self._number(left, "arithmetic"), self._number(right, "arithmetic")
        if isinstance(op, ast.Pow):
            if abs(b) > 64 or (isinstance(a, int) and isinstance(b, int) and a.bit_length() * abs(b) > MAX_INT_BITS):
                raise ExpressionError("exponent too large")
            result: Any = a**b
        elif isinstance(op, ast.Add):
            result = a + b
        elif isinstance(op, ast.Sub):
            result = a - b
        elif isinstance(op, ast.Mult):
            result = a * b
        elif isinstance(op, ast.Div):
            result = a / b
        elif isinstance(op, ast.FloorDiv):
            result = a // b
        elif isinstance(op, ast.Mod):
            result = a % b
        else:  # pragma: no cover - parse() rejects other operators
            raise ExpressionError(f"operator {type(op).__name__} not allowed")
        if isinstance(result, complex):
            raise ExpressionError("complex numbers are not supported")
        if isinstance(result, int) and result.bit_length() > MAX_INT_BITS:
            raise ExpressionError(f"integer result larger than {MAX_INT_BITS} bits")
        return result
