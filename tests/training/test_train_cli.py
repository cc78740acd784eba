"""`genretag train`'s vocabulary: flags generated from TrainConfig with real defaults, --arch
(and the deprecated --model), errors that name the flags `train` has."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import pytest

from genretag.cli import build_parser
from genretag.cli import main as genretag_main
from genretag.core.artifact import load_artifact
from genretag.schemas import FrontendParams
from genretag.training.cli import NOT_FLAGS, PREFIX, config_from_args
from genretag.training.config import TrainConfig
from genretag.training.synth import make_synth_dataset

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
FAST = ["--sample-rate", "16000", "--clip-seconds", "2", "--n-fft", "512", "--hop-length", "256",
        "--n-mels", "40", "--workers", "2", "--device", "cpu", "--no-progress"]


pytestmark = pytest.mark.heavy  # FFmpeg/decoder processes, TensorFlow or training


def _train_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


@pytest.fixture(scope="module")
def labels_csv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    clips = make_synth_dataset(root, per_class=6, seconds=3.0, workers=2,
                               labels=["ambient", "noise"])
    csv = root / "labels.csv"
    csv.write_text("path,label,split\n" + "".join(
        f"{c.path},{c.labels[0]},{c.split}\n" for c in clips))
    return csv


def test_help_shows_real_defaults_never_none(capsys) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "None" not in text and "default: None" not in text
    assert "--clip-seconds CLIP_SECONDS Seconds of one window" in text
    assert "[default 30.0; tdcnn: 10.0; --demo: 6.0]" in text
    assert "[default 0.003; transfer, transfer-ft: 0.001]" in text
    assert "[default off; tdcnn: on]" in text  # --stats-branch
    assert "[cnn, lstm: 25 s when the clip is ≥ 30 s]" in text  # --crop-seconds
    assert "--backbone PATH" in text and "--arch KIND" in text
    generated = [a for a in _train_parser()._actions if a.dest.startswith(PREFIX)]
    for action in generated:  # every default is stated: a value, a rule, or what none means
        assert "default" in action.help.lower(), action.option_strings


def test_every_config_field_is_a_flag() -> None:
    """Flags come from TrainConfig: each field (and each front-end field) has one, except
    the ones set otherwise (kind, objective, dataset name, label kinds)."""
    dests = {a.dest for a in _train_parser()._actions if a.dest.startswith(PREFIX)}
    fields = {n for n in TrainConfig.model_fields if n not in (*NOT_FLAGS, "frontend")}
    fields |= {f"frontend.{n}" for n in FrontendParams.model_fields}
    assert {d.removeprefix(PREFIX) for d in dests} == fields


def test_flags_are_typed_and_checked_when_parsed(capsys) -> None:
    args = build_parser().parse_args(["train", "--labels", "x.csv", "--channels", "8,16",
                                      "--no-amp", "--workers", "3", "--deltas", "2", "--c", "0.5",
                                      "--backbone", "bb.pt", "--no-rhythm"])
    cfg = config_from_args(args, "cnn", "single", "x")
    assert (cfg.channels, cfg.amp, cfg.decode_workers, cfg.frontend.deltas, cfg.c) == (
        (8, 16), False, 3, 2, 0.5)
    assert cfg.backbone == Path("bb.pt") and cfg.frontend.rhythm is False
    for bad, why in ((["--epochs", "0"], "greater than or equal to 1"),
                     (["--deltas", "3"], "less than or equal to 2"),
                     (["--lr", "fast"], "valid number"),
                     (["--temporal", "lstm"], "Input should be 'attention' or 'gru'")):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(["train", *bad])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {bad[0]}" in err and why in err, err


def test_model_is_a_deprecated_alias_of_arch(capsys) -> None:
    args = build_parser().parse_args(["train", "--model", "logreg,cnn"])
    assert args.arch == "logreg,cnn"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--model is deprecated" in err[0] and "use --arch" in err[0]
    build_parser().parse_args(["train", "--arch", "logreg"])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("argv", "message"), [
    (["--arch", "svm"], r"unknown model\(s\) \['svm'\]"),
    (["--arch", "transfer"], "--arch transfer needs --backbone PATH"),
    (["--arch", "logreg", "--backbone", "bb.pt"], "--backbone is used only by kinds that need"),
    (["--fine-tune"], "--fine-tune needs --backbone"),
    (["--arch", "logreg,dense", "--out", "m.pt"], "--out needs a single --arch"),
])
def test_kind_choices_are_checked_before_any_work(argv, message, tmp_path, capsys) -> None:
    """A usage error: exit 2 (they exited 1 through SystemExit before), one line."""
    assert genretag_main(["train", "--labels", str(tmp_path / "none.csv"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genretag train: "), err
    assert re.search(message, err[0]), err


@needs_ffmpeg
def test_a_missing_backbone_names_the_flag_train_has(labels_csv, tmp_path, capsys) -> None:
    missing = tmp_path / "nope.pt"
    assert genretag_main(["train", "--labels", str(labels_csv), "--backbone", str(missing),
                          "--runs-dir", str(tmp_path / "runs"), "--log-format", "json",
                          *FAST]) == 2  # usage
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("{")]
    assert len(err) == 1 and err[0].startswith(f"genretag train: --backbone {missing}: no such")
    assert "--model-path" not in err[0] and "genretag models pull" in err[0]


@needs_ffmpeg
def test_label_kinds_are_checked_before_decoding_and_recorded_for_any_kind(
        labels_csv, tmp_path, capsys) -> None:
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    base = ["train", "--labels", str(labels_csv), "--arch", "logreg", "--runs-dir", str(runs),
            "--cache-dir", str(cache), "--log-format", "json", *FAST]
    assert genretag_main([*base, "--kind", "calm=mood"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("{")]
    assert err == ["genretag train: --kind names label(s) calm that the run does not train; "
                   "its labels are ambient, noise"]
    assert not cache.exists() and not runs.exists()  # refused before decoding anything
    assert genretag_main([*base, "--kind", "noise=other", "--kind", "ambient=genre"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    _, manifest = load_artifact(Path(summary["artifact"]))
    assert manifest.kinds == {"noise": "other"} and manifest.name == "logreg"
