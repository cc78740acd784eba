"""Flags generated from a plain pydantic model (``add_model_arguments``): one per field, nested
fields flattened, values typed and checked when the line is parsed, only given ones collected."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from genretag.core.cli_settings import add_model_arguments, model_overrides


class Inner(BaseModel):
    size: int = Field(default=4, ge=1, description="How big.")
    loud: bool = False


class Outer(BaseModel):
    name: str = "x"
    rate: float = Field(default=1.5, gt=0, description="How often.")
    widths: tuple[int, ...] = (1, 2)
    mode: Literal["fast", "slow"] = "fast"
    weights: Path | None = None
    workers: int = 2
    inner: Inner = Field(default_factory=Inner)


def _parser(**kw) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t", exit_on_error=False)
    add_model_arguments(parser, Outer, dest_prefix="o.", flatten=("inner",),
                        default_text=lambda path, field: f"default of {path}",
                        aliases={"workers": ("--jobs",)}, **kw)
    return parser


def test_one_flag_per_field_typed_and_only_given_values_collected() -> None:
    parser = _parser(skip=("name",))
    args = parser.parse_args(["--rate", "2", "--widths", "3, 4,5", "--mode", "slow",
                              "--weights", "w.pt", "--jobs", "7", "--size", "9", "--loud"])
    assert model_overrides(args, "o.") == {
        "rate": 2.0, "widths": (3, 4, 5), "mode": "slow", "weights": Path("w.pt"),
        "workers": 7, "inner.size": 9, "inner.loud": True}
    assert model_overrides(parser.parse_args(["--no-loud"]), "o.") == {"inner.loud": False}
    assert model_overrides(parser.parse_args([]), "o.") == {}
    assert "--name" not in parser.format_help()
    text = " ".join(parser.format_help().split())
    assert "--rate RATE How often. [default of rate]" in text
    assert "--size SIZE How big. [default of inner.size]" in text
    assert "--weights PATH" in text and "--mode {fast,slow}" in text


@pytest.mark.parametrize(("argv", "why"), [
    (["--rate", "0"], "greater than 0"), (["--size", "0"], "greater than or equal to 1"),
    (["--widths", "1,x"], "valid integer"), (["--mode", "medium"], "'fast' or 'slow'"),
])
def test_values_are_checked_against_the_field_when_parsed(argv, why) -> None:
    with pytest.raises(argparse.ArgumentError, match=why):
        _parser().parse_args(argv)


def test_only_limits_the_fields_and_clashing_flags_are_refused() -> None:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser, Outer, dest_prefix="o.", default_text=lambda p, f: None,
                        only=("rate",))
    assert [a.dest for a in parser._actions if a.dest.startswith("o.")] == ["o.rate"]

    class Clash(BaseModel):
        size: int = 1
        inner: Inner = Field(default_factory=Inner)

    with pytest.raises(ValueError, match="--size"):
        add_model_arguments(argparse.ArgumentParser(), Clash, dest_prefix="c.",
                            default_text=lambda p, f: None, flatten=("inner",))
