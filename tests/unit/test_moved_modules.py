"""The import paths the docs named before ``integrations/`` was dissolved still work, with a DeprecationWarning."""

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
