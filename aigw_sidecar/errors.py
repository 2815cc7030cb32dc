"""The domain's exception tree; the transport maps each class to one gRPC status.

    AigwError
     ├── InvalidArgument      a field of the request is malformed (names the field)
     ├── NotFound             no API key with that key id
     ├── AlreadyExists        name (or legacy secret) already taken in the workspace
     ├── FailedPrecondition   the key's state forbids the change (limits on a legacy key)
     └── StoreUnavailable     the store could not be reached or timed out

Messages are safe to show to the caller: they never contain a secret.
"""

from __future__ import annotations


class AigwError(Exception):
    """Base class of every error the domain raises on purpose."""


class InvalidArgument(AigwError):
    """A request field is malformed; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(AigwError):
    """The API key does not exist (never did, or was deleted)."""


class AlreadyExists(AigwError):
    """A unique name or legacy secret is already taken."""


class FailedPrecondition(AigwError):
    """The key's current state does not allow the change."""


class StoreUnavailable(AigwError):
    """The store could not be reached in time; nothing was decided."""
