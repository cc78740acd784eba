"""``genretag tag``'s engine: one loaded model, one model pass per batch of files."""

from __future__ import annotations

import pytest

from genretag.core.settings import load_settings
from genretag.worker.infer import Tagger
from genretag.worker.oneshot import tag_files
from genretag.worker.settings import ModelSection, WorkerSettings


@pytest.mark.timeout(600)
def test_files_are_batched_across_into_model_passes_in_order(demo_model, demo_audio) -> None:
    files = [item.path for item in demo_audio[:7]]
    settings = load_settings(WorkerSettings, model_path=demo_model, device="cpu",
                             allowed_roots=sorted({str(p.parent) for p in files}),
                             batch_size=3, decode_workers=2)
    tagger = Tagger.load(ModelSection(path=demo_model, device="cpu", max_windows_per_call=8))
    passes: list[int] = []
    infer = tagger.infer_windows

    def counted(per_track, *args, **kwargs):  # the real model pass (tags and embedding), counted
        passes.append(len(per_track))
        return infer(per_track, *args, **kwargs)

    tagger.infer_windows = counted
    ids = [f"t{i}" for i in range(len(files))]
    outcomes = tag_files(list(zip(ids, files, strict=True)), settings, tagger)
    assert [o.record.track_id for o in outcomes] == ids  # in order, every file tagged
    assert passes == [3, 3, 1]  # one pass per batch of files, not one per file
    alone = tag_files([("t6", files[6])], settings, tagger)[0].record
    assert alone.probabilities == pytest.approx(outcomes[6].record.probabilities, abs=1e-5)
