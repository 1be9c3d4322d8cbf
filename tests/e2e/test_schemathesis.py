"""schemathesis over the whole OpenAPI schema, in-process (ASGI, with the app's lifespan).

Every operation gets positive cases (random path ids, and real ids of seeded runs, approvals,
human requests and keys) and negative cases. Required: no 5xx, every response conforms to its
documented schema, status code and content type, and every protected operation answers 401 to a
missing or wrong key.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import create_engine, insert

from agentmaestro.agents import load_agents_dir
from agentmaestro.cli._common import builtin_agents_dir
from agentmaestro.engine.worker import WorkerConfig
from agentmaestro.server.app import create_app
from agentmaestro.store.dialects import normalize_url
from agentmaestro.store.schema import human_requests
from tests.e2e.test_server import make_key

EXAMPLES = {GenerationMode.POSITIVE: 15, GenerationMode.NEGATIVE: 10}
REAL_ID_EXAMPLES = 8
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
PUBLIC = {"GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/integrations/oauth/callback"}
_SETTINGS = dict(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate, Phase.target],
)


class Fuzz:
    """The app under test, its schema and its seeded data."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.admin = make_key(url, "default", "admin")
        self.operator = make_key(url, "default", "operator")
        throwaway = make_key(url, "default", "viewer")
        self.app = create_app(
            url,
            agents=load_agents_dir(builtin_agents_dir()),
            worker_config=WorkerConfig(poll_interval_s=0.05),
            rate_limit_per_min=0,
        )
        self.schema = schemathesis.openapi.from_asgi("/openapi.json", self.app)
        self.client = asgi.get_client(self.app)
        self.ids = self._seed(throwaway)
        self.statuses: dict[str, Counter[int]] = defaultdict(Counter)

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.client.request(method, path, headers={"Authorization": f"Bearer {self.operator}"}, **kw)
        assert r.status_code < 300, r.text
        return r.json()

    def _wait(self, run_id: str, statuses: set[str]) -> None:
        deadline = time.monotonic() + 30
        while self._call("GET", f"/v1/runs/{run_id}")["status"] not in statuses:
            assert time.monotonic() < deadline, f"run {run_id} never reached {statuses}"
            time.sleep(0.05)

    def _seed(self, throwaway: str) -> dict[str, str]:
        done = self._call("POST", "/v1/runs", json={"agent": "calculator", "input": "2+3"})["run_id"]
        waiting = self._call("POST", "/v1/runs", json={"agent": "janitor", "input": "tidy"})["run_id"]
        self._wait(done, {"COMPLETED"})
        self._wait(waiting, {"WAITING_FOR_APPROVAL"})
        [approval] = self._call("GET", "/v1/approvals")["approvals"]
        request_id = f"hum_{uuid.uuid4().hex[:12]}"
        engine = create_engine(normalize_url(self.url))
        with engine.begin() as conn:
            conn.execute(
                insert(human_requests).values(
                    request_id=request_id,
                    workspace_id="default",
                    run_id=done,
                    kind="step_failed",
                    question="retry?",
                    detail={},
                    options=["retry", "answer", "abandon"],
                    status="pending",
                    created_at=time.time(),
                )
            )
        engine.dispose()
        kb = {"name": "fuzz-kb", "embedder": "lexical"}
        self._call("POST", "/v1/knowledge/collections", json=kb)
        doc = {"source": "fuzz.md", "text": "# Fuzz\n\nSeeded knowledge."}
        document_id = self._call("POST", "/v1/knowledge/collections/fuzz-kb/documents", json=doc)["document_id"]
        credential = {"name": "fuzz", "kind": "token", "value": "fuzz-token-value"}
        admin_key = {"Authorization": f"Bearer {self.admin}"}
        self.client.request("POST", "/v1/credentials", json=credential, headers=admin_key)
        # an objective whose planner (janitor) waits for an approval: it waits, and nothing fails in the background
        objective = self._call(
            "POST", "/v1/objectives", json={"goal": "fuzz", "planner": "janitor", "strategist": "calculator"}
        )["run_id"]
        self._wait(objective, {"WAITING_FOR_CHILDREN"})
        admin = {"Authorization": f"Bearer {self.admin}"}
        hook = {"name": "fuzz", "url": "http://127.0.0.1:9/hook", "events": ["run.failed"]}
        webhook_id = self.client.request("POST", "/v1/webhooks", json=hook, headers=admin).json()["webhook_id"]
        delivery = self.client.request("POST", f"/v1/webhooks/{webhook_id}/test", headers=admin).json()
        return {
            "run_id": done,
            "approval_id": approval["approval_id"],
            "request_id": request_id,
            "key_id": throwaway.split("_")[1],
            "name": "calculator",
            "objective_id": objective,
            "task_id": "t1",
            "collection": "fuzz-kb",
            "document_id": document_id,
            "credential": "fuzz",
            "webhook_id": webhook_id,
            "delivery_id": delivery["delivery_id"],
        }

    def close(self) -> None:
        self.client.close()
        asgi.shutdown_lifespans()


@pytest.fixture
def fuzz(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fuzz]:
    monkeypatch.setenv("MAESTRO_QDRANT_URL", ":memory:")  # the knowledge index (docs/knowledge.md)
    monkeypatch.setenv("MAESTRO_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")  # the seeded webhook posts to 127.0.0.1:9
    f = Fuzz(db_url)
    try:
        yield f
    finally:
        f.close()


def _label(op: Any) -> str:
    return f"{op.method.upper()} {op.path}"


def _run(
    op: Any, strategy: st.SearchStrategy[Any], n: int, fuzz: Fuzz, auth_checks: list[int], *, negative: bool = False
) -> str | None:
    """Run ``n`` cases of ``strategy``; the first failure's text, or None."""
    headers = {"Authorization": f"Bearer {fuzz.admin}"}
    protected = _label(op) not in PUBLIC

    @settings(max_examples=n, **_SETTINGS)  # type: ignore[arg-type]
    @given(case=strategy)
    def check(case: Any) -> None:
        response = case.call(headers=headers)
        fuzz.statuses[_label(op)][response.status_code] += 1
        case.validate_response(response, checks=CHECKS)
        if protected and auth_checks[0] < 3:
            auth_checks[0] += 1
            for bad in ({}, {"Authorization": "Bearer am_0000_wrong"}, {"X-API-Key": "nope"}):
                r = case.call(headers={**bad, "Authorization": bad.get("Authorization", "")})
                assert r.status_code == 401, f"{_label(op)} without a valid key answered {r.status_code}: {r.text}"
                assert r.json()["error"]["code"] == "unauthenticated"

    try:
        check()
    except Unsatisfiable:
        if negative:  # nothing to negate (no parameters, no body)
            return None
        raise
    except Exception as exc:  # collect, report all operations at the end
        return f"{_label(op)}: {type(exc).__name__}: {str(exc)[:3000]}"
    return None


def test_schemathesis_whole_api(fuzz: Fuzz) -> None:
    started = time.monotonic()
    failures: list[str] = []
    operations = [r.ok() for r in fuzz.schema.get_all_operations()]
    labels = {_label(op) for op in operations}
    assert {"POST /v1/runs", "PATCH /v1/workspace/settings", "GET /v1/usage", "GET /v1/audit"} <= labels
    for op in operations:
        secured = bool(op.definition.raw.get("security"))
        assert secured == (_label(op) not in PUBLIC), f"{_label(op)}: security declared {secured}"
        auth_checks = [0]
        for mode, n in EXAMPLES.items():
            try:
                strategy = op.as_strategy(generation_mode=mode)
            except Exception as exc:  # e.g. nothing to negate
                if mode is GenerationMode.POSITIVE:
                    failures.append(f"{_label(op)}: cannot generate: {exc}")
                continue
            failure = _run(op, strategy, n, fuzz, auth_checks, negative=mode is GenerationMode.NEGATIVE)
            if failure:
                failures.append(failure)
        names = [p.name for p in op.path_parameters] if op.path_parameters else []
        if names:
            real = {name: fuzz.ids[name] for name in names if name in fuzz.ids}
            assert real.keys() == set(names), f"no seeded id for {names} of {_label(op)}"
            strategy = op.as_strategy(path_parameters=real)
            failure = _run(op, strategy, REAL_ID_EXAMPLES, fuzz, auth_checks)
            if failure:
                failures.append(failure)
        if secured:
            assert auth_checks[0] > 0, f"{_label(op)}: the 401 checks never ran"
    elapsed = time.monotonic() - started
    for label, counts in sorted(fuzz.statuses.items()):
        print(f"{label:45} {sum(counts.values()):4} requests  {dict(sorted(counts.items()))}")
    assert not failures, f"{len(failures)} failing operations:\n\n" + "\n\n".join(failures)
    assert elapsed < 150, f"schemathesis took {elapsed:.0f}s"
