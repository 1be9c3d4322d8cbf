"""A trip-planning agent built from LangChain parts, governed by AgentMaestro.

The model is a LangChain chat model (offline: langchain-core's fake chat model replaying two tool calls and an
answer; for real: ChatOpenAI or ChatAnthropic), the tools are LangChain tools. AgentMaestro runs the loop, records
every step, and holds the DANGEROUS ``book_hotel`` call until it is approved.

Run offline (no key, no network)::

    python examples/langchain_agent/main.py
    python examples/langchain_agent/main.py --reject     # a person says no: the model is told and answers

Run for real (needs ``pip install langchain-openai`` or ``langchain-anthropic``)::

    OPENAI_API_KEY=... python examples/langchain_agent/main.py --real openai:gpt-4.1-mini
    ANTHROPIC_API_KEY=... python examples/langchain_agent/main.py --real anthropic:claude-haiku-4-5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool as lc_tool

from agentmaestro import Agent, Orchestrator, RiskLevel, RunStatus, StrictPolicy
from agentmaestro.adapters import LangChainModel, langchain_tool
from agentmaestro.models.pricing import Price, PriceTable

TASK = "Plan a weekend in Lisbon: check the weather, and book a hotel for 2 nights if it will be sunny."

BOOKINGS: list[str] = []


@lc_tool
def get_weather(city: str) -> str:
    """Weather forecast for the coming weekend in a city."""
    return f"{city}: sunny, 24 degrees on Saturday and Sunday"


@lc_tool
def book_hotel(city: str, nights: int) -> str:
    """Book a hotel room (this spends money)."""
    reference = f"HTL-{len(BOOKINGS) + 1:04d}"
    BOOKINGS.append(reference)
    return f"booked {nights} night(s) in {city}, reference {reference}"


class OfflineTripModel(FakeMessagesListChatModel):
    """langchain-core's fake chat model, answering like a tool-calling model would.

    It replays two tool calls, then writes its answer from the last tool result (so a rejected booking is
    reported as such).
    """

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if len(results) < len(self.responses):
            return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
        hotel = str(results[-1].content).rstrip(".")
        answer = f"Weather: {results[0].content}. Hotel: {hotel}. (Answer from a fake LangChain model.)"
        usage = {"input_tokens": 300, "output_tokens": 30, "total_tokens": 330}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=answer, usage_metadata=usage))])


def offline_chat_model() -> Any:
    """The offline stand-in for a real LangChain chat model."""

    def call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
        return {"name": name, "args": args, "id": call_id, "type": "tool_call"}

    usage = {"input_tokens": 250, "output_tokens": 25, "total_tokens": 275}
    return OfflineTripModel(
        responses=[
            AIMessage(content="", tool_calls=[call("get_weather", {"city": "Lisbon"}, "call_1")], usage_metadata=usage),
            AIMessage(
                content="Sunny all weekend: booking.",
                tool_calls=[call("book_hotel", {"city": "Lisbon", "nights": 2}, "call_2")],
                usage_metadata=usage,
            ),
        ]
    )


def real_chat_model(spec: str) -> Any:
    """A real LangChain chat model from ``openai:MODEL`` or ``anthropic:MODEL``."""
    provider, _, name = spec.partition(":")
    if provider == "openai":
        from langchain_openai import ChatOpenAI  # type: ignore[import-not-found]

        return ChatOpenAI(model=name or "gpt-4.1-mini")
    if provider == "anthropic":
        from langchain_anthropic import ChatAnthropic  # type: ignore[import-not-found]

        return ChatAnthropic(model=name or "claude-haiku-4-5")
    raise SystemExit(f"--real expects openai:MODEL or anthropic:MODEL, got {spec!r}")


def main(argv: list[str] | None = None) -> int:
    """Run the agent; approve (or reject) the hotel booking like a person would."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", metavar="PROVIDER:MODEL", help="use a real LangChain chat model")
    parser.add_argument("--reject", action="store_true", help="reject the booking instead of approving it")
    parser.add_argument("--db", help="SQLite file for the runs (default: a temporary folder)")
    args = parser.parse_args(argv)

    if args.real:
        model = LangChainModel(real_chat_model(args.real))  # priced by model name, e.g. langchain:gpt-4.1-mini
    else:
        model = LangChainModel(offline_chat_model(), name="offline-fake")
        PriceTable.default().add(model.name, Price(input_per_mtok=0.0, output_per_mtok=0.0))  # a free model
    agent = Agent(
        name="trip-planner",
        model=model,
        instructions="You plan short trips. Use the tools; book only when the weather is good.",
        tools=[
            langchain_tool(get_weather, risk=RiskLevel.SAFE, idempotent=True),
            langchain_tool(book_hotel, risk=RiskLevel.DANGEROUS),
        ],
        policy=StrictPolicy(max_steps=10, max_tool_calls=4, timeout_s=120),
    )
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(args.db) if args.db else Path(tmp) / "maestro.db"
        with Orchestrator(database_url=f"sqlite:///{db}") as orch:
            report = orch.run(agent, TASK, timeout=120)
            while report.status is RunStatus.WAITING_FOR_APPROVAL:
                for approval in orch.approvals():
                    print(f"approval needed: {approval['tool']}({approval['arguments']}) risk={approval['risk']}")
                    if args.reject:
                        orch.reject(approval["approval_id"], reason="not this weekend", by="example")
                        print("  -> rejected")
                    else:
                        orch.approve(approval["approval_id"], reason="looks fine", by="example")
                        print("  -> approved")
                report = orch.wait(report.run_id, timeout=120)
            print(f"status: {report.status.value}")
            print(
                f"steps={report.steps} tool_calls={report.tool_calls} tokens={report.tokens} cost_usd={report.cost_usd}"
            )
            print(f"bookings: {BOOKINGS or 'none'}")
            print(f"answer: {report.output}")
    return 0 if report.status is RunStatus.COMPLETED else 1


if __name__ == "__main__":
    sys.exit(main())
