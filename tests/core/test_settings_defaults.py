"""One default per knob: no module repeats a setting's default as a literal of the same name.

A setting's default lives in its section (``genretag/core/settings/``, ``worker/settings.py``,
``producer/settings.py``). Any other function parameter, class attribute or keyword argument
named like a setting (its field or public name) that carries the same literal value is a
second copy, which drifts the day the setting's default changes.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pydantic_core import PydanticUndefined

from genretag.core.settings import ReaderSettings, RedisSettings, Settings
from genretag.producer.settings import ProducerSettings
from genretag.worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[2]
#: Where the defaults are written, once.
HOMES = {"genretag/core/settings", "genretag/worker/settings.py", "genretag/producer/settings.py"}
#: Same name and value on purpose, with the reason.
NOT_COPIES = {
    ("genretag/core/audio/uri.py", "allow_http"):
        "a library call is closed by default; the worker always passes its setting",
    ("genretag/training/config.py", "device"): "training's own device choice, not the worker's",
}

def setting_defaults(classes: list[type[Settings]]) -> dict[str, set[object]]:
    """Field and public name → the literal defaults settings give them."""
    out: dict[str, set[object]] = {}
    for cls in classes:
        for public, (section, field) in cls.public_fields().items():
            info = cls.field_info(public)
            if info.default is PydanticUndefined or not isinstance(
                    info.default, int | float | str | bool):
                continue  # required, None, a factory or a list: no literal to repeat
            for name in {public, field}:
                out.setdefault(name, set()).add(info.default)
    return out


def literal_defaults(tree: ast.AST) -> list[tuple[str, object, int]]:
    """(name, value, line) of literal defaults: parameters, annotated class attributes, keywords."""
    found: list[tuple[str, object, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            positional = args.posonlyargs + args.args
            for arg, default in zip(positional[len(positional) - len(args.defaults):],
                                    args.defaults, strict=True):
                found.append((arg.arg, default, default.lineno))
            for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
                if default is not None:
                    found.append((arg.arg, default, default.lineno))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            found.append((node.target.id, node.value, node.lineno))
        elif isinstance(node, ast.Call):
            found += [(k.arg, k.value, k.value.lineno) for k in node.keywords if k.arg]
    out = []
    for name, node, line in found:
        value = constant(node)
        if value is not None:
            out.append((name, value, line))
    return out


def constant(node: ast.AST) -> object:
    """The value of a literal or of arithmetic on literals (``4 * 3600.0``), else None."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp | ast.UnaryOp) and all(
            isinstance(n, ast.Constant | ast.BinOp | ast.UnaryOp | ast.operator | ast.unaryop)
            for n in ast.walk(node)):
        return eval(compile(ast.Expression(node), "<default>", "eval"))  # noqa: S307 - literals
    return None


def test_no_setting_default_is_written_twice() -> None:
    defaults = setting_defaults([WorkerSettings, ProducerSettings, ReaderSettings, RedisSettings])
    copies = []
    for path in sorted((ROOT / "genretag").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if any(rel == home or rel.startswith(home + "/") for home in HOMES):
            continue
        for name, value, line in literal_defaults(ast.parse(path.read_text(encoding="utf-8"))):
            if (rel, name) in NOT_COPIES:
                continue
            if name in defaults and any(value == d and type(value) is type(d)
                                        for d in defaults[name]):
                copies.append(f"{rel}:{line}: {name}={value!r}")
    assert not copies, "setting defaults written again (take them from the section):\n" + \
        "\n".join(copies)


def test_the_scan_sees_a_copy() -> None:
    """The check is real: a parameter that repeats max_windows' default is found."""
    defaults = setting_defaults([WorkerSettings])
    probe = ast.parse("def place(max_windows: int = 64, max_track_s: float = 4 * 3600.0): ...")
    hits = [(n, v) for n, v, _ in literal_defaults(probe) if v in defaults.get(n, ())]
    assert ("max_windows", 64) in hits and ("max_track_s", 14400.0) in hits
    assert WorkerSettings().windows.max_windows == 64  # the probe's premise
