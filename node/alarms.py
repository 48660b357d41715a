"""What a validator reports about its own condition: counted alerts, a fatal halt, a
damaged store.

Every part of the node raises its alerts here (`alert`): a count per kind for the status
endpoint and one warning line each. `fail` stops deciding after a fatal inconsistency
(non-determinism or more than f faults); `corrupt` records the first damaged read of the
store, which halts consensus the same way and keeps the node from serving what does not
verify until it is rebuilt (`qchain node rebuild`).
"""

from __future__ import annotations

import logging

from qchain.errors import StorageCorrupt

log = logging.getLogger("qchain.node")


class Alarms:
    """The alerts and halts of one validator."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        """Alerts raised so far, by kind."""
        self.fatal: str | None = None
        """Why consensus stopped, if it did."""
        self.store_corrupt: str | None = None
        """The first damage found in the store."""

    def alert(self, kind: str, detail: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        log.warning("consensus alert %s: %s", kind, detail)

    def fail(self, reason: str) -> None:
        """A fatal inconsistency (non-determinism or more than f faults): stop deciding."""
        self.fatal = reason
        self.alert("fatal", reason)
        log.critical("stopping consensus: %s", reason)

    def corrupt(self, e: StorageCorrupt) -> None:
        """The first damaged read halts consensus, like `fail`, and is reported once."""
        if self.store_corrupt is not None:
            return
        self.store_corrupt = e.message
        self.fatal = f"store corrupt: {e.message}"
        log.critical(
            "%s; consensus stopped and unverifiable data is not served; "
            "rebuild this node from its peers: qchain node rebuild --config FILE, "
            "or put a backup in its place: qchain node restore --config FILE --in BACKUP",
            self.fatal,
        )
