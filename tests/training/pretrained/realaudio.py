"""Assemble real recordings for the end-to-end parity test from Debian packages (never committed).

``python -m tests.training.pretrained.realaudio DIR`` downloads two Debian packages of free game music
with ``apt-get download`` (not installed), unpacks them with ``dpkg -x`` and writes 12 s WAV
excerpts (original rate, from 20 s in) of the chosen tracks into DIR, with the packages'
copyright files beside them. Licences: lincity-ng-data (GPL-2+ / CC BY-SA), wesnoth-1.16-music
(GPL-2+); see the copied ``*.copyright`` files. Idempotent: existing excerpts are kept.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGES = ("lincity-ng-data", "wesnoth-1.16-music")
#: (package, path inside it, excerpt name): pop/electronic, blues, ambient and orchestral tracks.
TRACKS = (
    ("lincity-ng-data", "usr/share/games/lincity-ng/music/default/01 - pronobozo - lincity.ogg",
     "lincity.wav"),
    ("lincity-ng-data",
     "usr/share/games/lincity-ng/music/default/02 - Robert van Herk - City Blues.ogg",
     "city_blues.wav"),
    ("lincity-ng-data", "usr/share/games/lincity-ng/music/default/03 - Robert van Herk - "
     "Architectural Contemplations.ogg", "architectural.wav"),
    *(("wesnoth-1.16-music", f"usr/share/games/wesnoth/1.16/data/core/music/{name}.ogg",
       f"wesnoth_{name}.wav")
      for name in ("battle", "knolls", "wanderer", "traveling_minstrels", "love_theme",
                   "the_king_is_dead", "underground", "elvish-theme", "northerners")),
)
OFFSET_S, SECONDS = 20, 12  # 4 patches of 3 s per file: the suite stays near 2 minutes


def assemble(dest: Path) -> list[Path]:
    """The excerpts in ``dest`` (made if missing); raises ``RuntimeError`` if a step fails."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = [dest / name for _, _, name in TRACKS]
    if all(p.is_file() for p in wanted):
        return wanted
    with tempfile.TemporaryDirectory(prefix="genretag-audio-") as tmp:
        work = Path(tmp)
        for package in PACKAGES:
            run(["apt-get", "download", "-q", package], cwd=work)
            debs = sorted(work.glob(f"{package}_*.deb"))
            if not debs:
                raise RuntimeError(f"apt-get download {package} produced no .deb")
            run(["dpkg", "-x", str(debs[-1]), str(work / "x")])
            copyright_file = work / "x" / "usr/share/doc" / package / "copyright"
            if copyright_file.is_file():
                shutil.copy(copyright_file, dest / f"{package}.copyright")
        for package, inner, name in TRACKS:
            run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                 "-ss", str(OFFSET_S), "-t", str(SECONDS), "-i", str(work / "x" / inner),
                 "-c:a", "pcm_s16le", str(dest / name)])
    return wanted


def run(argv: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{argv[0]} {argv[1]} failed: {tail[0]}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.training.pretrained.realaudio DIR")
    for path in assemble(Path(sys.argv[1])):
        print(path)
