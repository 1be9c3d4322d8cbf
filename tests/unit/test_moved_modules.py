"""Import paths the docs named before a module moved (integrations/ dissolved, the delta sink) warn and forward."""

from __future__ import annotations

import importlib
import sys

import pytest


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [
        ("agentmaestro.integrations.credentials", "agentmaestro.credentials.runtime", "authorization_header"),
        ("agentmaestro.integrations.notify_signing", "agentmaestro.notify.signing", "verify_signature"),
        ("agentmaestro.integrations.notify_targets", "agentmaestro.notify.targets", "TargetPolicy"),
    ],
)
def test_old_path_warns_and_forwards(old: str, new: str, name: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=rf"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize("name", ["DeltaSink", "delta_publisher", "get_delta_sink", "set_delta_sink"])
def test_delta_sink_names_in_models_base_warn_and_forward(name: str) -> None:
    from agentmaestro.models import base, streaming

    with pytest.warns(
        DeprecationWarning, match=rf"agentmaestro.models.base.{name} moved to agentmaestro.models.streaming"
    ):
        value = getattr(base, name)
    assert value is getattr(streaming, name)
