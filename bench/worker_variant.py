"""`genretag work` with the pre-issue-6 per-file decode path, for side-by-side comparisons.

``python -m bench.worker_variant --per-file-decode [work flags]``: the real worker loop, with
:attr:`worker.process.Processor.grouped_decode` off (one pool task and one FFmpeg per file).
Every other knob (``torch_threads``, ``inference_max_windows``) is an ordinary setting.
"""

from __future__ import annotations

import sys

from genretag.cli import main as cli_main
from worker.process import Processor


def main(argv: list[str]) -> int:
    if "--per-file-decode" in argv:
        argv = [a for a in argv if a != "--per-file-decode"]
        Processor.grouped_decode = False
    return cli_main(["work", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
