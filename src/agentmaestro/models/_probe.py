"""Is a local OpenAI-compatible server up (and does it have the model)? Asked before a run starts.

Only servers on local or private addresses are probed (Ollama, vLLM, llama.cpp server): they are cheap to
ask and often simply not started. A successful answer is remembered for :data:`PROBE_TTL_S` seconds, so a
burst of runs asks once.
"""

from __future__ import annotations

import time

from agentmaestro.errors import ModelUnavailableError

PROBE_TIMEOUT_S = 2.0
"""How long to wait for the server's ``GET /models``."""

PROBE_TTL_S = 30.0
"""How long a successful probe is remembered."""

_ok: dict[tuple[str, str], float] = {}


async def probe_local_server(
    *, name: str, model: str, base_url: str, api_key: str, must_list_model: bool, base_url_env: str | None = None
) -> None:
    """Ask ``GET {base_url}/models``; raise when the server cannot be reached or lacks the model.

    Args:
        name: The model string, for messages (``ollama:llama3.2``).
        model: The model name the server is asked for.
        base_url: The server's OpenAI-compatible base URL (``.../v1``).
        api_key: Sent as a bearer token (local servers usually ignore it).
        must_list_model: Whether the model must be among those listed (Ollama serves only pulled models;
            llama.cpp and single-model vLLM servers answer any name).
        base_url_env: The environment variable that sets ``base_url``, for the message.

    Raises:
        ModelUnavailableError: the server is down, or does not list the model.
    """
    import httpx

    key = (base_url, model)
    if time.monotonic() - _ok.get(key, float("-inf")) < PROBE_TTL_S:
        return
    url = base_url.rstrip("/") + "/models"
    try:
        async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S) as client:
            response = await client.get(url, headers={"Authorization": f"Bearer {api_key}"})
    except httpx.HTTPError as exc:
        reason = type(exc).__name__
        where = f"set {base_url_env} to" if base_url_env else "use"
        raise ModelUnavailableError(
            f"model {name!r}: the server at {base_url} does not answer ({reason}); start it, or {where} a running one"
        ) from None
    if must_list_model and response.status_code == 200:
        try:
            ids = [str(m.get("id")) for m in response.json().get("data") or [] if isinstance(m, dict)]
        except ValueError:
            ids = None
        if ids is not None and model not in ids and f"{model}:latest" not in ids:
            shown = ", ".join(sorted(ids)[:10]) or "none"
            raise ModelUnavailableError(
                f"model {name!r}: the server at {base_url} has no model {model!r} (it has: {shown}); pull it first"
            )
    _ok[key] = time.monotonic()
