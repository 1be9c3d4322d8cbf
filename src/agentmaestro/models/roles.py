"""Per-role models: which model plays the planner, the worker, the reviewer, set in configuration.

A model string ``role:NAME`` resolves through this configuration, so agents and workflows can name a role
instead of a model and the deployment decides which model fills it. Roles are looked up in, first to last:

1. ``MAESTRO_MODEL_<ROLE>`` environment variables (``MAESTRO_MODEL_PLANNER=openai:gpt-4.1``);
2. the ``models:`` section of the YAML file named by ``MAESTRO_CONFIG``::

       models:
         planner: openai:gpt-4.1
         worker: anthropic:claude-sonnet-4-5
         reviewer: openai:gpt-4.1-mini
         default: openai:gpt-4.1-mini

3. the ``default`` role (same two places), for any role that is not set.

The usual roles are ``planner``, ``worker``, ``reviewer`` and ``default``; any other name made of lowercase
letters, digits, ``_`` and ``-`` works the same way. An agent with an explicit model (``openai:gpt-4o``) uses that
model: the role only applies to agents whose model is ``role:NAME``, and to callers that ask
:func:`model_for_role` without an override.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from agentmaestro.errors import ConfigError

if TYPE_CHECKING:  # base resolves role:NAME through role_model() below
    from agentmaestro.models.base import Model

__all__ = [
    "CONFIG_ENV",
    "KNOWN_ROLES",
    "ROLE_ENV_PREFIX",
    "RoleModels",
    "model_for_role",
    "role_model",
    "role_models",
]

ROLE_ENV_PREFIX = "MAESTRO_MODEL_"
"""``MAESTRO_MODEL_<ROLE>`` sets the model of one role."""
CONFIG_ENV = "MAESTRO_CONFIG"
"""Names a YAML file whose ``models:`` section maps roles to model strings."""
KNOWN_ROLES = ("planner", "worker", "reviewer", "default")
"""The roles AgentMaestro itself uses."""

_ROLE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


def _env_name(role: str) -> str:
    return ROLE_ENV_PREFIX + role.upper().replace("-", "_")


def _check_role(role: str) -> str:
    if not isinstance(role, str) or not _ROLE_RE.match(role):
        raise ConfigError(
            f"invalid role name {role!r}: use lowercase letters, digits, '_' or '-' (e.g. planner, worker, reviewer)"
        )
    return role.replace("-", "_")  # 'code-reviewer' and 'code_reviewer' are one role


def _check_model(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a model string like 'openai:gpt-4.1-mini', got {value!r}")
    model = value.strip()
    prefix, sep, rest = model.partition(":")
    if not sep or not rest:
        raise ConfigError(f"{where}: model {model!r} must look like 'provider:name' (e.g. 'openai:gpt-4.1-mini')")
    if prefix == "role":
        raise ConfigError(f"{where}: a role must name a model, not another role ({model!r})")
    return model


@dataclass(frozen=True)
class RoleModels:
    """A role -> model-string mapping, with where each entry came from."""

    models: Mapping[str, str] = field(default_factory=dict)
    """Model string by role."""
    sources: Mapping[str, str] = field(default_factory=dict)
    """Where each role's model was set (an environment variable or the config file)."""

    @classmethod
    def load(
        cls, config_path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> RoleModels:
        """Read the roles from a config file and the environment (the environment wins).

        Args:
            config_path: YAML file with a ``models:`` section; defaults to ``$MAESTRO_CONFIG`` when set.
            environ: Environment to read (default ``os.environ``).

        Raises:
            ConfigError: the file is missing or malformed, or a value is not a model string.
        """
        env = os.environ if environ is None else environ
        models: dict[str, str] = {}
        sources: dict[str, str] = {}
        path = config_path if config_path is not None else (env.get(CONFIG_ENV) or None)
        if path is not None:
            for role, model in _read_config(Path(path)).items():
                models[role] = model
                sources[role] = f"{path} (models.{role})"
        for name, value in env.items():
            if not name.startswith(ROLE_ENV_PREFIX) or not value.strip():
                continue
            role = name[len(ROLE_ENV_PREFIX) :].lower()
            if not _ROLE_RE.match(role):
                continue
            models[role] = _check_model(value, name)
            sources[role] = name
        return cls(models=models, sources=sources)

    def get(self, role: str) -> str | None:
        """The model string of ``role``, falling back to ``default``; None when neither is set."""
        return self.models.get(_check_role(role)) or self.models.get("default")

    def model_for(self, role: str) -> str:
        """The model string of ``role`` (or of ``default``).

        Raises:
            ConfigError: neither the role nor ``default`` is configured; the message says how to set it.
        """
        model = self.get(role)
        if model is None:
            raise ConfigError(
                f"no model configured for role {role!r}: set {_env_name(role)} (or MAESTRO_MODEL_DEFAULT), "
                f"or add 'models: {{{role}: provider:name}}' to the YAML file named by {CONFIG_ENV}"
            )
        return model

    def source_of(self, role: str) -> str | None:
        """Where the model used for ``role`` was configured."""
        role = _check_role(role)
        if role in self.models:
            return self.sources.get(role)
        return self.sources.get("default")


def _read_config(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r} ({CONFIG_ENV}): {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must be a mapping (with an optional 'models' section)")
    section = data.get("models")
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"config file {str(path)!r}: 'models' must map roles to model strings")
    out: dict[str, str] = {}
    for role, model in section.items():
        out[_check_role(str(role))] = _check_model(model, f"{path}: models.{role}")
    return out


def role_models() -> RoleModels:
    """The roles configured right now (environment and ``MAESTRO_CONFIG``); read on every call."""
    return RoleModels.load()


def model_for_role(role: str, override: str | Model | None = None) -> str | Model:
    """The model to use for ``role``: ``override`` when given (an agent's explicit model), else the configured one.

    Raises:
        ConfigError: no override and the role is not configured.
    """
    if override is not None and not (isinstance(override, str) and not override.strip()):
        return override
    return role_models().model_for(role)


def role_model(role: str) -> str:
    """The model string that plays ``role`` (what ``role:NAME`` resolves to).

    Raises:
        ConfigError: the role name is malformed or the role is not configured.
    """
    return role_models().model_for(_check_role(role))
