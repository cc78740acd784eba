#!/usr/bin/env bash
# Run the test suite (after bootstrap). Extra args go to pytest. "No tests ran" is a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
GENRETAG_DEPLOY_TOOLS=1 GENRETAG_DOCS_TOOLS=1 bash scripts/bootstrap.sh || exit 1
# Parity extras (TensorFlow CPU, librosa), the musicnn wheel and real-audio excerpts.
bash scripts/parity_setup.sh || { echo "test.sh: parity setup failed" >&2; exit 1; }
# Layer contracts first (pyproject.toml [tool.importlinter]): a back-edge fails the build.
.venv/bin/lint-imports --no-cache >/tmp/genretag-lint-imports.$$ 2>&1 || {
  cat /tmp/genretag-lint-imports.$$ >&2; rm -f /tmp/genretag-lint-imports.$$
  echo "test.sh: import contracts broken (see above)" >&2; exit 1; }
grep -E "kept|broken" /tmp/genretag-lint-imports.$$ | tail -n 1; rm -f /tmp/genretag-lint-imports.$$
# The documentation site (mkdocs.yml): generated reference pages, and a broken link fails it.
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet >/tmp/genretag-mkdocs.$$ 2>&1 || {
  cat /tmp/genretag-mkdocs.$$ >&2; rm -f /tmp/genretag-mkdocs.$$
  echo "test.sh: mkdocs build --strict failed (see above)" >&2; exit 1; }
rm -f /tmp/genretag-mkdocs.$$; echo "docs: mkdocs build --strict ok (build/site)"
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests: treating as failure" >&2
  exit 1
fi
exit "$rc"
