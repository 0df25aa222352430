"""The project's one error tree; library errors are translated into it at each edge."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CallbackAriError(Exception):
    """Root of every error this package raises on purpose."""


class ExitCode(enum.IntEnum):
    """The process exit status of every ``callback-ari`` command (documented in the README)."""

    OK = 0
    FAILED = 1  # a check failed, the demo failed, or no such callback / cannot be cancelled
    USAGE = 2  # bad configuration or usage (argparse's own status for usage errors too)
    REDIS = 3  # Redis unreachable
    ASTERISK = 4  # Asterisk refused us: another program took the Stasis app, wrong credentials
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


# --- configuration -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in the configuration, located the way an Asterisk admin reads it."""

    section: str
    key: str
    message: str
    value: str | None = None

    def __str__(self) -> str:
        where = f"[{self.section}] {self.key}" if self.key else f"[{self.section}]"
        if self.value is None:
            return f"{where}: {self.message}"
        return f"{where}: {self.message}, got {self.value!r}"


class ConfigError(CallbackAriError):
    """The configuration is unusable; carries every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# --- store -------------------------------------------------------------------------


class StoreError(CallbackAriError):
    """The callback store failed."""


class StoreUnavailable(StoreError):
    """Redis cannot be reached (connection refused, timeout, auth)."""


class NotReplicated(StoreError):
    """A write was not confirmed by enough replicas in time (``[redis] min_replicas``)."""

    def __init__(self, wanted: int, confirmed: int) -> None:
        self.wanted = wanted
        self.confirmed = confirmed
        super().__init__(f"write confirmed by {confirmed} of {wanted} replicas")


class CorruptRecord(StoreError):
    """A key in our namespace does not hold what the schema says it should."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"corrupt record at {key}: {reason}")


class CallbackNotFound(StoreError):
    """No callback with that id."""


class InvalidTransition(StoreError):
    """The requested state change is not allowed from the record's current state."""


# --- phone numbers -----------------------------------------------------------------


class NumberRejected(CallbackAriError):
    """A phone number may not be called back; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


# --- ARI ---------------------------------------------------------------------------


class AriError(CallbackAriError):
    """Any failure talking to ARI."""


class AriUnavailable(AriError):
    """ARI cannot be reached (connection refused, timeout, TLS failure)."""


class AriHTTPError(AriError):
    """ARI answered a REST call with an error status."""

    def __init__(self, status: int, message: str, method: str = "", path: str = "") -> None:
        self.status = status
        self.message = message
        self.method = method
        self.path = path
        super().__init__(f"{method} {path} -> {status} {message}".strip())


class AriBadRequest(AriHTTPError):
    """400: a parameter is missing or invalid."""


class AriAuthError(AriHTTPError):
    """401/403: wrong ARI username or password."""


class AriNotFound(AriHTTPError):
    """404: channel, playback or variable not found (a hung-up channel answers this)."""


class AriConflict(AriHTTPError):
    """409: e.g. a channel id that is still live, or a channel not in Stasis."""


class AriPreconditionFailed(AriHTTPError):
    """412: the channel is in a state that does not allow the operation."""


class AriUnprocessable(AriHTTPError):
    """422: e.g. the endpoint or the context/extension does not exist."""


class ApplicationReplaced(AriError):
    """Another WebSocket took our Stasis application name; we receive nothing any more."""


# --- AMI ---------------------------------------------------------------------------


class AmiError(CallbackAriError):
    """Any failure talking to AMI."""


class AmiUnavailable(AmiError):
    """AMI cannot be reached, or the connection was lost."""


class AmiAuthError(AmiError):
    """AMI refused the login."""


class AmiActionError(AmiError):
    """AMI answered an action with ``Response: Error``."""

    def __init__(self, action: str, message: str) -> None:
        self.action = action
        self.message = message
        super().__init__(f"{action}: {message}")


class AmiTimeout(AmiError):
    """No answer to an action (or a keepalive) in time; the connection is presumed dead."""


# --- AGI ---------------------------------------------------------------------------


class AgiError(CallbackAriError):
    """An AGI command failed (510 invalid command, 520 usage error, bad reply)."""


class AgiHangup(AgiError):
    """The channel hung up during an AGI session (``result=-1`` or HANGUP)."""
