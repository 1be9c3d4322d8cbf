"""Adapters: models and tools from other frameworks, governed by AgentMaestro.

* Any object with ``invoke(task)`` / ``ainvoke(task)`` runs as a single-step agent:
  :func:`adapt` (also applied by ``Orchestrator.run``) and :class:`InvokeModel`.
* LangChain (optional extra ``agentmaestro[langchain]``): :class:`LangChainModel` uses a LangChain chat model as
  an AgentMaestro model; :func:`langchain_tool` turns a LangChain tool into a governed tool. They are imported on
  first use, so ``import agentmaestro.adapters`` works without LangChain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentmaestro.agents import InvokeModel, adapt

if TYPE_CHECKING:
    from agentmaestro.adapters.langchain import LangChainModel, langchain_tool

__all__ = ["InvokeModel", "LangChainModel", "adapt", "langchain_tool"]

_LAZY = {"LangChainModel", "langchain_tool"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from agentmaestro.adapters import langchain

        return getattr(langchain, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
