"""Agents: a model, instructions, tools and a policy. Defined in Python, in YAML, or adapted.

An agent's *spec* (a JSON mapping) is stored with every run, so the run records exactly what it
was started with. Workers execute runs of the agents they have registered.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agentmaestro.core.decide import DELEGATE_TOOL
from agentmaestro.core.gate import GatePolicy
from agentmaestro.core.messages import ModelRequest, ModelResponse, Usage
from agentmaestro.core.policy import StrictPolicy
from agentmaestro.errors import ConfigError, ModelAPIError, ModelUnavailableError, one_line
from agentmaestro.models.base import Model, resolve_model
from agentmaestro.tools.registry import Tool, load_tool, tool

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def _check_name(name: Any, what: str = "agent") -> str:
    if not isinstance(name, str) or not name or len(name) > 200 or not set(name) <= _NAME_CHARS:
        raise ConfigError(f"{what} name {name!r} must be 1-200 characters of letters, digits, '_', '-' or '.'")
    return name


@dataclass(kw_only=True)
class Agent:
    """An agent definition.

    Example::

        agent = Agent(name="calc", model="openai:gpt-4.1-mini", instructions="Add numbers.", tools=[add])
    """

    name: str
    """Unique name within a workspace."""
    model: str | Model
    """A model string (``provider:name``) or a Model object."""
    instructions: str = ""
    """The system prompt."""
    tools: Sequence[Tool | Callable[..., Any]] = ()
    """Tools the agent may call (``@tool`` functions or plain functions with docstrings)."""
    policy: StrictPolicy | None = None
    """Default limits for runs of this agent."""
    description: str = ""
    """What the agent is for (shown in listings)."""
    source: str | None = None
    """Where the definition came from (a YAML path), if anywhere."""
    gate: GatePolicy | None = None
    """Approval rules for this agent's tool calls; combined with the workspace's (stricter wins)."""
    max_attempts: int = 4
    """Failed attempts in a row (model or tool) before the run is escalated to a human."""
    retry_backoff_s: float = 1.0
    """First backoff between failed attempts; doubles each time (capped at 30 s)."""
    max_output_tokens: int | None = None
    """Cap on each model answer (also the worst case a budget reserves per call; default 4096 there)."""
    delegates: Sequence[str | Agent] = ()
    """Agents (or agent names) this agent may start as sub-agent runs through the built-in ``delegate`` tool."""
    _tools: dict[str, Tool] = field(init=False, repr=False)
    _model: Model | None = field(init=False, repr=False, default=None)
    sub_agents: list[Agent] = field(init=False, repr=False, default_factory=list)

    def __post_init__(self) -> None:
        _check_name(self.name)
        built: dict[str, Tool] = {}
        for t in self.tools:
            tt = t if isinstance(t, Tool) else tool(t)
            if tt.name in built:
                raise ConfigError(f"agent {self.name!r} lists tool {tt.name!r} twice")
            built[tt.name] = tt
        self.sub_agents = [d for d in self.delegates if isinstance(d, Agent)]
        self.delegates = [d.name if isinstance(d, Agent) else _check_name(d) for d in self.delegates]
        if self.delegates:
            if DELEGATE_TOOL in built:
                raise ConfigError(f"agent {self.name!r}: the tool name {DELEGATE_TOOL!r} is reserved")
            built[DELEGATE_TOOL] = delegate_tool([str(d) for d in self.delegates])
        self._tools = built
        if not isinstance(self.model, str) and not isinstance(self.model, Model):
            raise ConfigError(f"agent {self.name!r}: model must be a 'provider:name' string or a Model object")
        if isinstance(self.model, str):
            resolve_model(self.model)  # fail early on unknown providers / missing scripts
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigError(f"agent {self.name!r}: max_attempts must be a positive integer")
        mot = self.max_output_tokens
        if mot is not None and (isinstance(mot, bool) or not isinstance(mot, int) or mot < 1):
            raise ConfigError(f"agent {self.name!r}: max_output_tokens must be a positive integer")
        if not isinstance(self.retry_backoff_s, int | float) or self.retry_backoff_s < 0:
            raise ConfigError(f"agent {self.name!r}: retry backoff must be a non-negative number")

    @property
    def model_name(self) -> str:
        """The model string."""
        return self.model if isinstance(self.model, str) else self.model.name

    def get_model(self) -> Model:
        """The resolved model (built once)."""
        if self._model is None:
            self._model = resolve_model(self.model)
        return self._model

    def tool_map(self) -> dict[str, Tool]:
        """Tools by name."""
        return self._tools

    def spec(self) -> dict[str, Any]:
        """The JSON definition stored with each run."""
        return {
            "name": self.name,
            "model": self.model_name,
            "instructions": self.instructions,
            "description": self.description,
            "tools": [
                {"name": t.name, "risk": t.risk.name, "idempotent": t.idempotent, "import_path": t.import_path}
                for t in self._tools.values()
            ],
            "policy": (self.policy or StrictPolicy()).to_json(),
            "gate": self.gate.to_json() if self.gate else None,
            "retry": {"max_attempts": self.max_attempts, "backoff_s": self.retry_backoff_s},
            "delegates": [str(d) for d in self.delegates],
            "max_output_tokens": self.max_output_tokens,
            "source": self.source,
        }

    # ------------------------------------------------------------------------------- YAML

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        *,
        source: str = "<agent>",
        base_dir: Path | None = None,
        mcp_tools: dict[str, list[Tool]] | None = None,
    ) -> Agent:
        """Build from a YAML/JSON mapping: name, model, instructions, tools, policy, gate, retry, delegates.

        ``tools`` entries are import paths (``package.module:function``), built-in tools
        (``builtin:read_file``), or MCP references: ``mcp:SERVER`` (every tool of a server in
        ``mcp_tools``) or ``mcp:SERVER/TOOL``.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: an agent definition is a mapping")
        known = {
            "name",
            "model",
            "instructions",
            "description",
            "tools",
            "policy",
            "gate",
            "retry",
            "delegates",
            "max_output_tokens",
        }
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        for required in ("name", "model"):
            if not data.get(required):
                raise ConfigError(f"{source}: missing required field {required!r}")
        model = data["model"]
        if not isinstance(model, str):
            raise ConfigError(f"{source}: model must be a string like 'openai:gpt-4.1-mini'")
        if model.startswith("scripted:") and base_dir is not None:
            ref = model.partition(":")[2]
            candidate = base_dir / ref
            if candidate.is_file():
                model = f"scripted:{candidate.resolve()}"
        tools_raw = data.get("tools") or []
        if base_dir is not None and str(base_dir.resolve()) not in sys.path:
            # Tools of a YAML agent may live next to it (``tools.py`` beside ``agent.yaml``).
            sys.path.append(str(base_dir.resolve()))
        if not isinstance(tools_raw, list) or not all(isinstance(t, str) for t in tools_raw):
            raise ConfigError(f"{source}: tools must be a list of import paths like 'package.module:function'")
        try:
            tools = [t for ref in tools_raw for t in _resolve_tool_ref(ref, mcp_tools, source, base_dir)]
            policy = StrictPolicy.from_json(data.get("policy"))
            gate = GatePolicy.from_json(data["gate"]) if data.get("gate") is not None else None
            retry = data.get("retry") or {}
            if not isinstance(retry, dict) or set(retry) - {"max_attempts", "backoff_s"}:
                raise ConfigError("retry must be a mapping with max_attempts and/or backoff_s")
            return cls(
                name=_check_name(data["name"]),
                model=model,
                instructions=str(data.get("instructions") or ""),
                description=str(data.get("description") or ""),
                tools=tools,
                policy=policy,
                source=source,
                gate=gate,
                max_attempts=retry.get("max_attempts", 4),
                retry_backoff_s=retry.get("backoff_s", 1.0),
                delegates=_names(data.get("delegates"), source),
                max_output_tokens=data.get("max_output_tokens"),
            )
        except ConfigError as exc:
            msg = str(exc)
            raise ConfigError(msg if msg.startswith(source) else f"{source}: {msg}") from None
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, *, mcp_tools: dict[str, list[Tool]] | None = None) -> Agent:
        """Load one agent from a YAML file."""
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read agent file {str(p)!r}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {one_line(exc)}") from None
        return cls.from_dict(data, source=str(p), base_dir=p.parent, mcp_tools=mcp_tools)


def project_root_for(module: str, start: Path) -> Path | None:
    """The nearest folder at or above ``start`` holding ``module``'s top-level package (or ``.py`` file).

    A YAML agent in ``examples/calc/agent.yaml`` naming ``examples.calc.tools:add`` finds the repository root
    this way, so it runs without ``PYTHONPATH``.
    """
    top = module.split(".")[0]
    if not top.isidentifier():
        return None
    for folder in [start.resolve(), *start.resolve().parents]:
        if (folder / top).is_dir() or (folder / f"{top}.py").is_file():
            return folder
    return None


def _import_root(ref: str, base_dir: Path | None) -> None:
    """Put the project folder holding ``ref``'s module on ``sys.path`` when it cannot be imported as is."""
    import importlib.util

    module = ref.partition(":")[0].strip()
    top = module.split(".")[0]
    if base_dir is None or not top or top in sys.modules:
        return
    try:
        if importlib.util.find_spec(top) is not None:
            return
    except (ImportError, ValueError):
        return
    root = project_root_for(module, base_dir)
    if root is not None and str(root) not in sys.path:
        sys.path.append(str(root))


def _resolve_tool_ref(
    ref: str, mcp_tools: dict[str, list[Tool]] | None, source: str, base_dir: Path | None = None
) -> list[Tool]:
    if ref.startswith("builtin:"):
        from agentmaestro.tools.builtin import BUILTIN_TOOLS
        from agentmaestro.tools.builtin.integrations import INTEGRATION_TOOLS, integration_tool
        from agentmaestro.tools.memory import MEMORY_TOOLS

        builtins = {**BUILTIN_TOOLS, **MEMORY_TOOLS, **INTEGRATION_TOOLS}
        name = ref[len("builtin:") :]
        bound = integration_tool(name)  # slack_post_message, notion_create_page, rest_call with ?bindings
        if bound is not None:
            return [bound]
        if name not in builtins:
            raise ConfigError(f"{source}: unknown built-in tool {name!r}; known: {', '.join(sorted(builtins))}")
        return [builtins[name]]
    if not ref.startswith("mcp:"):
        _import_root(ref, base_dir)
        try:
            return [load_tool(ref)]
        except ConfigError as exc:
            if "no module named" not in str(exc) or base_dir is None:
                raise
            raise ConfigError(
                f"{exc}; looked in {base_dir} and the folders above it: run from the project folder that holds "
                "the module, pass --path DIR (the folder holding it), or set PYTHONPATH"
            ) from None
    server, _, name = ref[4:].partition("/")
    available = (mcp_tools or {}).get(server)
    if available is None:
        known = ", ".join(sorted(mcp_tools or {})) or "none (add mcp_servers.yaml next to the agents)"
        raise ConfigError(f"{source}: unknown MCP server {server!r} in {ref!r}; configured servers: {known}")
    if not name:
        return list(available)
    wanted = f"{server}__{name}"
    for t in available:
        if t.name == wanted:
            return [t]
    raise ConfigError(f"{source}: MCP server {server!r} has no tool {name!r}")


def load_mcp_servers(path: Path) -> dict[str, list[Tool]]:
    """Start (list) the MCP servers configured in a YAML file; returns their tools by server name."""
    import asyncio
    import concurrent.futures

    from agentmaestro.tools.mcp import load_mcp_tools, mcp_configs_from_yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    configs = mcp_configs_from_yaml(text, source=str(path))

    async def load_all() -> dict[str, list[Tool]]:
        return {c.name: await load_mcp_tools(c) for c in configs}

    # Listing tools is async; run it on its own loop (callers may be inside a running loop).
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, load_all()).result()


def _names(value: Any, source: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: delegates must be a list of agent names")
    return [_check_name(v) for v in value]


def delegate_tool(agents: list[str]) -> Tool:
    """The built-in ``delegate`` tool: start a sub-agent run and wait for its answer.

    The engine intercepts calls to it (the run waits in WAITING_FOR_CHILDREN without holding a
    worker); the function itself never runs.
    """

    async def delegate(agent: str, task: str) -> str:
        raise RuntimeError("delegate is executed by the engine, not called directly")

    t = tool(
        delegate,
        name=DELEGATE_TOOL,
        description=(
            "Hand a self-contained task to another agent and get its final answer back. "
            f"Available agents: {', '.join(agents)}."
        ),
        idempotent=True,
    )
    t.parameters["properties"]["agent"]["enum"] = list(agents)
    return t


class InvokeModel:
    """Adapts an object with ``invoke(task)`` (or ``ainvoke``) to the Model protocol.

    The whole object runs as one governed step; its return value is the run's answer.
    """

    def __init__(self, target: Any, *, name: str) -> None:
        if not (hasattr(target, "invoke") or hasattr(target, "ainvoke")):
            raise ConfigError(f"{type(target).__name__} has neither invoke() nor ainvoke()")
        self.target = target
        self._name = name

    @property
    def name(self) -> str:
        """``invoke:<name>``."""
        return f"invoke:{self._name}"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Call ``invoke(task)`` with the run's task."""
        import anyio

        task = next((m.content or "" for m in request.messages if m.role == "user"), "")
        try:
            if hasattr(self.target, "ainvoke"):
                result = await self.target.ainvoke(task)
            else:
                fn = self.target.invoke
                result = await fn(task) if inspect.iscoroutinefunction(fn) else await anyio.to_thread.run_sync(fn, task)
        except Exception as exc:  # the step failed: retried, then escalated like any model step
            raise ModelAPIError(f"{self._name}.invoke raised {type(exc).__name__}: {exc}", transient=False) from exc
        content = getattr(result, "content", result)
        return ModelResponse(content=str(content), usage=Usage(), model=self.name, finish_reason="stop")


def adapt(obj: Any, *, name: str | None = None) -> Agent:
    """Return ``obj`` if it is an Agent, else wrap an ``invoke``-able object as a single-step agent."""
    if isinstance(obj, Agent):
        return obj
    agent_name = name or getattr(obj, "name", None) or type(obj).__name__
    if not isinstance(agent_name, str):
        agent_name = type(obj).__name__
    return Agent(
        name=_check_name(agent_name),
        model=InvokeModel(obj, name=agent_name),
        max_attempts=getattr(obj, "max_attempts", 4),
        retry_backoff_s=getattr(obj, "retry_backoff_s", 1.0),
    )


async def check_usable(agents: Iterable[Agent]) -> None:
    """Fail fast, before a run starts, when one of ``agents`` has a model this process cannot use.

    Each distinct model is checked once (:func:`~agentmaestro.models.base.check_model`: an API key is set, a
    local server answers). Delegates are not followed: a sub-agent's run reports its own model's problem.

    Raises:
        ModelUnavailableError: names the agent and says what to set or start.
    """
    from agentmaestro.models.base import check_model

    seen: set[str] = set()
    for agent in agents:
        if agent.model_name in seen:
            continue
        seen.add(agent.model_name)
        try:
            await check_model(agent.model)
        except ModelUnavailableError as exc:
            raise ModelUnavailableError(f"agent {agent.name!r} cannot run here: {exc}") from None


class AgentRegistry:
    """Agents a worker can run, by name.

    An agent is shared by every workspace, unless it was registered *for* workspaces (``register(agent,
    workspace_id=...)``, as the chat's ``@tool`` agents are): then only those workspaces see it in
    :meth:`visible_to`, the view every API route works with. Workers run from the whole registry.
    """

    def __init__(self, agents: Iterable[Agent] = ()) -> None:
        self._agents: dict[str, Agent] = {}
        self._scopes: dict[str, frozenset[str]] = {}
        for a in agents:
            self.register(a)

    def register(self, agent: Agent, *, workspace_id: str | None = None) -> Agent:
        """Add (or replace) an agent, and the sub-agents it was given as objects.

        Args:
            agent: The agent.
            workspace_id: Make it visible to this workspace only (added to the workspaces it was registered for
                before); None shares it with every workspace.
        """
        self._agents[agent.name] = agent
        if workspace_id is None:
            self._scopes.pop(agent.name, None)
        else:
            self._scopes[agent.name] = self._scopes.get(agent.name, frozenset()) | {workspace_id}
        for sub in agent.sub_agents:
            if self._agents.get(sub.name) is not sub:
                self.register(sub, workspace_id=workspace_id)
        return agent

    def visible_to(self, workspace_id: str) -> AgentRegistry:
        """The agents ``workspace_id`` may list and start: the shared ones and those registered for it."""
        view = AgentRegistry()
        view._agents = {
            name: agent
            for name, agent in self._agents.items()
            if name not in self._scopes or workspace_id in self._scopes[name]
        }
        return view

    def get(self, name: str) -> Agent:
        """The agent called ``name``; ConfigError listing known ones if absent."""
        try:
            return self._agents[name]
        except KeyError:
            known = ", ".join(sorted(self._agents)) or "(none)"
            raise ConfigError(f"unknown agent {name!r}; known agents: {known}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._agents)

    def __contains__(self, name: object) -> bool:
        return name in self._agents

    def __iter__(self) -> Iterator[Agent]:
        return iter(self._agents.values())

    def __len__(self) -> int:
        return len(self._agents)


MCP_SERVERS_FILE = "mcp_servers.yaml"
"""In an agents folder: the MCP servers whose tools the folder's agents may use (``mcp:SERVER``)."""


def load_agents_dir(path: str | Path) -> AgentRegistry:
    """Load every ``*.yaml``/``*.yml`` agent in a folder (not recursive), and its ``mcp_servers.yaml``."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"agents folder {str(folder)!r} does not exist")
    registry = AgentRegistry()
    mcp_file = folder / MCP_SERVERS_FILE
    mcp_tools = load_mcp_servers(mcp_file) if mcp_file.is_file() else None
    for file in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        if file.name == MCP_SERVERS_FILE:
            continue
        agent = Agent.from_yaml(file, mcp_tools=mcp_tools)
        if agent.name in registry:
            raise ConfigError(f"{file}: agent name {agent.name!r} is defined twice in {folder}")
        registry.register(agent)
    return registry
