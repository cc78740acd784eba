#!/usr/bin/env bash
# Faults and abuse suite at the published sizes (`make faults`): SIGKILLed workers, Redis and
# broker outages, hostile input, access control, all on real servers and `genretag work`
# processes. Writes build/faults.json (the suite's figures) and renders docs/faults.md from it
# (the documentation site's Faults report; the README links to it).
#   GENRETAG_FAULTS_FULL=0   small CI sizes instead of the published ones
#   GENRETAG_FAULTS_SEED=N   replay the random kill points of an earlier run
# Extra arguments go to pytest. Exit status: pytest's ("no tests collected" counts as failure).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh || exit 1

export GENRETAG_FAULTS_FULL="${GENRETAG_FAULTS_FULL:-1}"
export GENRETAG_FAULTS_REPORT="${GENRETAG_FAULTS_REPORT:-$PWD/build/faults.json}"
rm -f "$GENRETAG_FAULTS_REPORT"

.venv/bin/python -m pytest tests/faults -p no:cacheprovider -rxX "$@"
rc=$?
[ "$rc" -eq 5 ] && rc=1

if [ -f "$GENRETAG_FAULTS_REPORT" ]; then
  mkdir -p docs
  .venv/bin/python -m tests.faults.figures "$GENRETAG_FAULTS_REPORT" docs/faults.md || rc=1
  echo "faults.sh: figures in $GENRETAG_FAULTS_REPORT, table in docs/faults.md" >&2
else
  echo "faults.sh: the suite recorded no figures" >&2
  [ "$rc" -eq 0 ] && rc=1
fi
exit "$rc"
