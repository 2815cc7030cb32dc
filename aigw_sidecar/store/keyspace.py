"""Every Redis key name the sidecar uses, built in this one module.

All keys of one API key share the hash tag ``{<key id>}`` so each admission
script touches a single slot and runs unchanged on Redis Cluster. Indexes of a
workspace share ``{<workspace>}``. Key names carry key ids and workspace names,
never a secret or a key hash.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keyspace:
    prefix: str = "aigw"

    @property
    def deployment(self) -> str:
        """Hash: settings every replica must share (lease and dedupe times), pinned by the first."""
        return f"{self.prefix}:deployment"

    def record(self, key_id: str) -> str:
        """Hash: the key's fields, limits and lifetime totals."""
        return f"{self.prefix}:key:{{{key_id}}}"

    def window(self, key_id: str) -> str:
        """Sorted set: admitted requests of the last 60 s, scored by µs."""
        return f"{self.prefix}:win:{{{key_id}}}"

    def usage(self, key_id: str) -> str:
        """Hash: cost and token counters of the current period, tagged with its id."""
        return f"{self.prefix}:usage:{{{key_id}}}"

    def seen(self, key_id: str) -> str:
        """Sorted set: request ids already counted by RecordUsage, scored by ms."""
        return f"{self.prefix}:seen:{{{key_id}}}"

    def lease(self, key_id: str) -> str:
        """Sorted set: open budget reservations, request id -> lease expiry ms."""
        return f"{self.prefix}:lease:{{{key_id}}}"

    def lease_amounts(self, key_id: str) -> str:
        """Hash: request id -> "tokens cost" reserved by that request."""
        return f"{self.prefix}:leasev:{{{key_id}}}"

    def token_window(self, key_id: str) -> str:
        """Sorted set: tokens charged in the last 60 s (tokens per minute), scored by µs;
        members are ``<µs>-<seq>:<tokens>``, their total is kept in the record."""
        return f"{self.prefix}:tpm:{{{key_id}}}"

    def slots(self, key_id: str) -> str:
        """Sorted set: parallel-request slots held, request id -> lease expiry ms."""
        return f"{self.prefix}:slot:{{{key_id}}}"

    def history(self, key_id: str) -> str:
        """Hash: usage per UTC day of the last 100 days; the running counters of the
        last day with a report (``day``, ``c``, ``t``, ``r``), then ``d:<day>`` per
        earlier day (see ``lua/_prelude.lua``)."""
        return f"{self.prefix}:hist:{{{key_id}}}"

    def admission_keys(self, key_id: str) -> list[str]:
        """The keys of authorize.lua and read_key.lua, in their KEYS order."""
        return [
            self.record(key_id),
            self.window(key_id),
            self.usage(key_id),
            self.lease(key_id),
            self.lease_amounts(key_id),
            self.token_window(key_id),
            self.slots(key_id),
            self.seen(key_id),
        ]

    def all_keys(self, key_id: str) -> list[str]:
        """Every key of one API key (what delete_key.lua removes), in its KEYS order."""
        return [
            self.record(key_id),
            self.window(key_id),
            self.usage(key_id),
            self.seen(key_id),
            self.lease(key_id),
            self.lease_amounts(key_id),
            self.token_window(key_id),
            self.slots(key_id),
            self.history(key_id),
        ]

    def names(self, workspace: str) -> str:
        """Hash: key name -> key id, unique within the workspace."""
        return f"{self.prefix}:names:{{{workspace}}}"

    def name_claims(self, workspace: str) -> str:
        """Hash: key name -> ms its claim was made (a claim without a key is stale later)."""
        return f"{self.prefix}:claims:{{{workspace}}}"

    def key_list(self, workspace: str) -> str:
        """Sorted set: key ids of the workspace, scored by creation ms."""
        return f"{self.prefix}:keys:{{{workspace}}}"

    @property
    def workspaces(self) -> str:
        """Sorted set (all scores 0, so ordered by name): every workspace with keys."""
        return f"{self.prefix}:workspaces"

    @property
    def legacy(self) -> str:
        """Hash: key hash of a legacy secret -> key id."""
        return f"{self.prefix}:legacy:{{legacy}}"

    @property
    def legacy_claims(self) -> str:
        """Hash: key hash of a legacy secret -> ms its claim was made (same slot as legacy)."""
        return f"{self.prefix}:legacy-claims:{{legacy}}"

    @property
    def audit(self) -> str:
        """Stream: the audit trail of admin actions, capped (never holds a secret)."""
        return f"{self.prefix}:audit"

    @property
    def events(self) -> str:
        """Stream: budget alert events of every key, capped (never holds a secret)."""
        return f"{self.prefix}:events"
