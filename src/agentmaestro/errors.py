"""The AgentMaestro error hierarchy: one root, a few families, and control-flow signals apart."""

from __future__ import annotations


class MaestroError(Exception):
    """Root of every error AgentMaestro raises on purpose."""

    code: str = "maestro_error"


class NotFoundError(MaestroError):
    """A run, agent, step or other resource does not exist (or belongs to another workspace)."""

    code = "not_found"


class ConflictError(MaestroError):
    """The resource changed underneath the caller (a guarded update matched no row)."""

    code = "conflict"


class LeaseLostError(ConflictError):
    """A worker tried to commit to a run whose lease another worker has taken over."""

    code = "lease_lost"


class InvalidTransitionError(ConflictError):
    """An event is not allowed in the run's current status or phase."""

    code = "invalid_transition"


class ConfigError(MaestroError):
    """Bad configuration or input: an agent file, a model string, a policy value, a URL."""

    code = "invalid_config"


class ModelUnavailableError(ConfigError):
    """A model cannot be used from this process: no API key, an unknown model, an unreachable local server."""

    code = "model_unavailable"


class ValidationError(ConfigError):
    """Input that does not match the expected shape."""

    code = "invalid_input"


class ModelAPIError(MaestroError):
    """A model provider answered with an error.

    Attributes:
        status_code: HTTP status code from the provider, when there was one.
        body: The provider's response body, truncated, when there was one.
    """

    code = "model_error"

    def __init__(
        self, message: str, *, status_code: int | None = None, body: str | None = None, transient: bool | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body
        self._transient = transient

    @property
    def transient(self) -> bool:
        """True for errors worth retrying without spending an attempt: 429, 5xx, timeouts."""
        if self._transient is not None:
            return self._transient
        return self.status_code is None or self.status_code == 429 or self.status_code >= 500


class ScriptExhaustedError(ModelAPIError):
    """A scripted model was asked for more turns than its script holds."""

    code = "script_exhausted"

    @property
    def transient(self) -> bool:
        """Never transient: replaying the same script again gives the same answer."""
        return False


class ToolError(MaestroError):
    """A tool failed or could not be called."""

    code = "tool_error"


class SchemaMismatchError(MaestroError):
    """The database schema is not at the revision this code expects (run `maestro db upgrade`)."""

    code = "schema_mismatch"


def one_line(text: object) -> str:
    """Collapse a (possibly multi-line) message to one line, for CLI and API errors."""
    return " ".join(str(text).split())


class LocalOnlyError(MaestroError):
    """A CLI command that needs the database directly was given ``--server`` (exit code 2)."""

    code = "local_only"


class AuthError(MaestroError):
    """A server refused the credentials: a missing, wrong or revoked API key (401) or a role too low (403)."""

    code = "unauthenticated"


class ForbiddenError(AuthError):
    """The actor's role does not allow the action (403)."""

    code = "forbidden"


class RateLimitedError(MaestroError):
    """A server asked to slow down (429): a per-key rate limit or a workspace quota.

    Attributes:
        retry_after: Seconds to wait before trying again, when the server said.
    """

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerError(MaestroError):
    """A server could not be reached, or failed (5xx)."""

    code = "server_error"
