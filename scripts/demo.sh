#!/usr/bin/env bash
# The main job end to end on the embedded stack:
# bootstrap → stack up → train (or reuse) the demo model → produce the demo audio (+2 broken
# files) → work until idle with one worker serving a model set: the demo model and the pretrained
# musicnn MSD model (real tag words), each track decoded once per window layout, with tag events
# → print every model's tags, dead letters, the tag events and the tracks most like one of them
# (`genretag similar`, embedded index) → the MSD model's genres and moods (its namespace) →
# stack down.
# Only the CLI: no Python internals (Python code reads tags through genretag.client).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

export GENRETAG_STATE_DIR="${GENRETAG_STATE_DIR:-$PWD/.genretag/demo}"
export GENRETAG_ALLOWED_ROOTS="$PWD/data"
G=".venv/bin/genretag --log-format plain"

cleanup() { $G stack down >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== 1/6 stack up (Tansu + redis-server on free loopback ports)"
$G stack up

echo "== 2/6 train the demo model (reused when models/demo.pt exists and has an embedding; its audio made if missing)"
if [[ -f models/demo.pt ]] && ! $G models info models/demo.pt --json | grep -q '"embedding": {'; then
  rm -f models/demo.pt  # made before artifact contract v2: no embedding for `similar`
fi
$G train --demo --reuse --out models/demo.pt
MODELS=models/demo.pt  # a model set: the demo model first (root keys), musicnn MSD beside it
if $G models pull musicnn-msd --out models/msd_musicnn.pt; then
  MODELS=models/demo.pt,models/msd_musicnn.pt
else
  echo "(musicnn wheel unavailable: the worker serves the demo model alone)"
fi

echo "== 3/6 produce the demo catalog (+ two broken files that must be dead-lettered)"
mkdir -p data/demo/_broken
printf 'this is not audio\n' > data/demo/_broken/not-audio.mp3
head -c 2000 "$(ls data/demo/techno/*.mp3 | head -n 1)" > data/demo/_broken/truncated.mp3
$G produce data/demo --no-progress

echo "== 4/6 work until the topic is drained (one worker, models: $MODELS)"
$G --log-level WARNING work --until-idle --models "$MODELS" --sinks tags,embeddings,events

echo "== 5/6 results"
uris=$(find data/demo -name '*_000.mp3' | sort | while read -r f; do printf -- '--uri %s ' "$f"; done)
$G tags $uris
echo
echo "top techno tracks:"
$G tags --genre techno --limit 5
echo
echo "dead letters (the two broken files):"
$G dlq list
echo
events=$($G events --from-beginning)
echo "tag events on genretag.tags ($(printf '%s\n' "$events" | wc -l) of them, one per tagged track; the first 3):"
printf '%s\n' "$events" | sed -n '1,3p'
first=$(find data/demo -name '*_000.mp3' | sort | head -n 1)
echo "tracks that sound like $first (embedded index, synced from Redis on the way):"
$G similar --uri "$first" --limit 5 --index-uri .genretag/demo/similarity.usearch

echo
echo "== 6/6 the MSD model's tags, written by the same worker under its namespace"
if [[ "$MODELS" == *msd_musicnn.pt ]]; then
  # A further model's keys are the same layout under <prefix>ns:<model name>: (KeyLayout).
  NS=(--redis-key-prefix "${GENRETAG_REDIS_KEY_PREFIX:-genretag:}ns:musicnn-msd:")
  echo "genres (tags --kind genre) and moods (tags --kind mood) the MSD model gave the catalog:"
  $G tags --kind genre "${NS[@]}"
  $G tags --kind mood "${NS[@]}" || echo "(no mood tag over its threshold in this catalog)"
else
  echo "(musicnn wheel unavailable: skipped the pretrained model)"
fi
