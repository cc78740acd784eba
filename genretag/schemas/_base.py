"""Shared base for all contracts: frozen, strict about unknown fields, UTC timestamps."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, ValidationError


def utcnow() -> datetime:
    """Timezone-aware now, so every timestamp on the wire is unambiguous."""
    return datetime.now(UTC)


class Contract(BaseModel):
    """Base of every wire model: immutable, rejects unknown fields, JSON round-trips exactly."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


def describe_errors(exc: ValidationError, whole: str = "value") -> str:
    """One line naming each offending field and why (``whole`` names errors on no field)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or whole}: {err['msg']}" for err in exc.errors()
    )
