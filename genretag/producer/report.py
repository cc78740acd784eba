"""What a produce run did: counts by outcome, and the first rejected rows with origin and reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

#: Errors kept verbatim in a report; the rest are counted (and logged), so memory stays bounded.
MAX_KEPT_ERRORS = 1000


@dataclass
class ProduceReport:
    """Counts of one run. ``selected``: valid rows chosen to send; ``enqueued``: acknowledged."""

    selected: int = 0
    enqueued: int = 0
    failed: int = 0
    skipped: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    dry_run: bool = False
    strict_aborted: bool = False
    aborted: str | None = None

    def add_error(self, message: str) -> None:
        """Record one problem (bad row, unacknowledged message); only the first ones are kept."""
        self.error_count += 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append(message)

    @property
    def ok(self) -> bool:
        """Nothing failed to send, no abort; invalid rows alone don't fail a non-strict run."""
        return not (self.failed or self.aborted or self.strict_aborted)

    def as_dict(self) -> dict[str, object]:
        return {
            "selected": self.selected, "enqueued": self.enqueued, "failed": self.failed,
            "skipped": dict(self.skipped), "dry_run": self.dry_run,
            "strict_aborted": self.strict_aborted, "aborted": self.aborted,
            "error_count": self.error_count, "errors": self.errors[:100],
        }

    def summary(self) -> str:
        """Human-readable lines for the end of a run."""
        if self.strict_aborted:
            head = f"strict: {self.error_count} bad row(s); nothing was sent"
        elif self.dry_run:
            head = f"dry run: {self.selected} track(s) would be enqueued; nothing was sent"
        else:
            head = f"enqueued {self.enqueued} track(s)"
            if self.failed:
                head += f", {self.failed} NOT acknowledged"
        lines = [head]
        if self.skipped:
            lines.append("skipped: " + ", ".join(
                f"{reason} {n}" for reason, n in sorted(self.skipped.items())))
        if self.aborted:
            lines.append(f"aborted: {self.aborted}")
        return "\n".join(lines)
