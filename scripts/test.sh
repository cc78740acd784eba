#!/usr/bin/env bash
# Run the test suite (after bootstrap). Extra args go to pytest. "No tests ran" is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
GENRETAG_DEPLOY_TOOLS=1 bash scripts/bootstrap.sh || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests: treating as failure" >&2
  exit 1
fi
exit "$rc"
