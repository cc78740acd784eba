"""deploy/: settings names, manifest structure and consistency, and deploy/validate.sh.

The structural tests need PyYAML; the env-var test does not. ``test_validate_sh_*`` run the
real linters/validators (hadolint, check-jsonschema, kubernetes-validate, Docker Compose) when
deploy/requirements-validate.txt is installed in this interpreter's venv, and skip otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from core import settings as settings_module
from producer.settings import ProducerSettings
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
K8S = DEPLOY / "k8s"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
WORKER_DOCKERFILES = [DOCKER / "worker.Dockerfile", DOCKER / "worker-cpu.Dockerfile"]
OVERLAYS = ["base", "overlays/cpu", "overlays/gpu"]

ENV_NAME = re.compile(r"\bGENRETAG_[A-Z0-9_]*[A-Z0-9]\b")
# GENRETAG_* variables that genretag reads with os.environ rather than as settings fields;
# each maps to the text that proves genretag/ still reads it.
NON_SETTING_VARS = {
    "GENRETAG_STATE_DIR": 'f"{ENV_PREFIX}STATE_DIR"',
    "GENRETAG_TANSU_BIN": '"GENRETAG_TANSU_BIN"',
}
VALIDATE_TOOLS = ("hadolint", "check-jsonschema", "kubernetes-validate")


def setting_env_names() -> set[str]:
    classes = [
        obj
        for obj in vars(settings_module).values()
        if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj is not BaseSettings
    ] + [WorkerSettings, ProducerSettings]
    return {f"GENRETAG_{name.upper()}" for cls in classes for name in cls.model_fields}


def deploy_text_files() -> list[Path]:
    files = [
        p
        for p in DEPLOY.rglob("*")
        if p.is_file() and p.suffix not in (".json", ".pyc") and "__pycache__" not in p.parts
    ]
    assert len(files) > 20, files
    return files


# -- 1. every GENRETAG_* name in deploy/ is a real setting ------------------------------------


def test_genretag_env_vars_in_deploy_files_are_settings() -> None:
    known = setting_env_names()
    used: dict[str, set[str]] = {}
    for path in deploy_text_files():
        for name in ENV_NAME.findall(path.read_text(encoding="utf-8")):
            used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    # The scan must see the core names, or it is not scanning what we think it is.
    for must in (
        "GENRETAG_KAFKA_BOOTSTRAP_SERVERS",
        "GENRETAG_REDIS_PASSWORD",
        "GENRETAG_METRICS_PORT",
        "GENRETAG_DEVICE",
        "GENRETAG_GROUP_ID",
    ):
        assert must in used, f"{must} not found in deploy/"
    unknown = {
        name: sorted(files)
        for name, files in used.items()
        if name not in known and name not in NON_SETTING_VARS
    }
    assert not unknown, f"GENRETAG_* names that are no settings field: {unknown}"


def test_non_setting_allowlist_is_still_read_by_genretag() -> None:
    source = "\n".join(p.read_text(encoding="utf-8")
                        for folder in ("genretag", "core") for p in (ROOT / folder).glob("*.py"))
    for name, proof in NON_SETTING_VARS.items():
        assert proof in source, f"{name} is no longer read in genretag/ or core/: drop it"
        assert name not in setting_env_names()


# -- helpers for the YAML tests ---------------------------------------------------------------


@pytest.fixture(scope="module")
def yaml():
    return pytest.importorskip(
        "yaml", reason="PyYAML not installed (deploy/requirements-validate.txt)"
    )


@pytest.fixture(scope="module")
def render_k8s(yaml):
    spec = importlib.util.spec_from_file_location("render_k8s", DEPLOY / "tools" / "render_k8s.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}; $$ -> $."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        current = env.get(name)
        if op in (":-", "-"):
            empty = current is None or (op == ":-" and current == "")
            return arg if empty else current
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                raise KeyError(f"{name}: {arg}")
            return current
        return current or ""

    return _INTERPOLATION.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "use the mapping form of environment:"
    return {k: str(v) for k, v in env.items()}


@pytest.fixture(scope="module")
def compose(yaml) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose_gpu(yaml) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.gpu.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rendered(render_k8s) -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
    out = {}
    for name in OVERLAYS:
        docs = render_k8s.render(K8S / name)
        out[name] = {(d["kind"], d["metadata"]["name"]): d for d in docs}
        assert len(out[name]) == len(docs), f"duplicate kind/name in {name}"
    return out


def settings_from_env(cls: type, env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cls(_env_file=None)


# -- 2. compose -------------------------------------------------------------------------------


def test_compose_services_and_shape(compose) -> None:
    services = compose["services"]
    assert {"kafka", "redis", "topic-init", "worker", "producer", "prometheus"} <= set(services)

    kafka_env = compose_env(services["kafka"])
    assert "controller" in kafka_env["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert "CONTROLLER" in kafka_env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "healthcheck" in services["kafka"]

    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--appendfsync always" in redis_cmd
    assert "requirepass" in redis_cmd
    assert services["redis"]["image"].startswith("redis:7")

    init = services["topic-init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    script = " ".join(init["command"])
    assert "kafka-topics.sh" in script and "--if-not-exists" in script
    assert "GENRETAG_KAFKA_TOPIC:-genretag.tracks}" in script
    assert "GENRETAG_KAFKA_DLQ_TOPIC:-genretag.tracks.dlq}" in script

    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N
    assert worker["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
    assert worker["build"]["context"] == ".."
    assert (DEPLOY / worker["build"]["context"] / worker["build"]["dockerfile"]).is_file()
    assert services["producer"]["profiles"] and services["prometheus"]["profiles"]
    assert (
        DEPLOY
        / services["producer"]["build"]["context"]
        / services["producer"]["build"]["dockerfile"]
    ).is_file()


def test_compose_gpu_override(compose_gpu) -> None:
    worker = compose_gpu["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert worker["environment"]["GENRETAG_DEVICE"] == "cuda"
    assert (ROOT / worker["build"]["dockerfile"]).is_file()


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_compose_worker_env_is_valid_worker_settings(
    compose, compose_gpu, gpu: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = compose_env(compose["services"]["worker"])
    if gpu:
        env.update(compose_env(compose_gpu["services"]["worker"]))
    env = interpolate(env, {"GENRETAG_REDIS_PASSWORD": "pw"})
    with pytest.raises(KeyError, match="GENRETAG_REDIS_PASSWORD"):
        interpolate(compose_env(compose["services"]["worker"]), {})  # required, no default
    settings = settings_from_env(WorkerSettings, env, monkeypatch)
    assert settings.device == ("cuda" if gpu else "cpu")
    assert settings.kafka_bootstrap_servers == ["kafka:9092"]
    assert settings.metrics_port == 9100
    assert str(settings.model_path).startswith("/models/")
    assert settings.allowed_roots == ["/music"]
    assert (
        settings.redis_password is not None and settings.redis_password.get_secret_value() == "pw"
    )
    assert settings.kafka_partitions == 12
    mounts = {v.split(":")[1] for v in interpolate(compose["services"]["worker"]["volumes"], {})}
    assert {"/models", "/music"} <= mounts


def test_compose_producer_env_is_valid_producer_settings(
    compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = compose["services"]["producer"]
    env = interpolate(compose_env(producer), {"GENRETAG_REDIS_PASSWORD": "pw"})
    settings = settings_from_env(ProducerSettings, env, monkeypatch)
    assert settings.kafka_topic == "genretag.tracks"
    assert producer["command"][0] == "produce"
    # The producer sends absolute paths; workers must see the library at the same path.
    producer_music = interpolate(producer["volumes"], {})[0].split(":")
    worker_mounts = dict(
        v.split(":")[1::-1] for v in interpolate(compose["services"]["worker"]["volumes"], {})
    )
    assert producer_music[1] == "/music" and worker_mounts["/music"] == producer_music[0]


def test_prometheus_scrapes_worker_metrics_port(yaml, compose) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    sd = jobs["genretag-worker"]["dns_sd_configs"][0]
    assert "worker" in sd["names"] and sd["type"] == "A"
    port = compose["services"]["worker"]["environment"]["GENRETAG_METRICS_PORT"]
    assert sd["port"] == int(port)
    volumes = compose["services"]["prometheus"]["volumes"]
    assert any(v.startswith("./prometheus/prometheus.yml:") for v in volumes)


# -- 2. Kubernetes ----------------------------------------------------------------------------

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


def _pod_env(objs: dict) -> dict[str, str]:
    env = dict(objs[("ConfigMap", "genretag-worker-config")]["data"])
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
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_common()["sasl_mechanism"] == "SCRAM-SHA-512"
    assert settings.redis_url.startswith("rediss://")
    expected_device = {"base": "auto", "overlays/cpu": "cpu", "overlays/gpu": "cuda"}[name]
    assert settings.device == expected_device


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


# -- render_k8s.py's merge semantics (kustomize compatibility is checked by validate.sh) -------


def test_render_strategic_merge_semantics(render_k8s) -> None:
    base = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "a",
                            "image": "a:1",
                            "env": [{"name": "X", "value": "1"}],
                            "args": ["one"],
                            "ports": [{"containerPort": 1, "name": "p"}],
                        },
                        {"name": "b", "image": "b:1"},
                    ],
                    "tolerations": [{"key": "k1"}],
                    "nodeSelector": {"drop": "me", "keep": "me"},
                }
            }
        },
    }
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "a", "env": [{"name": "Y", "value": "2"}], "args": ["two"]},
                        {"name": "c", "image": "c:1"},
                    ],
                    "tolerations": [{"key": "k2"}],
                    "nodeSelector": {"drop": None},
                }
            }
        },
    }
    docs = [base]
    render_k8s.apply_patch(docs, patch, "test")
    pod = docs[0]["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["containers"]]
    assert names == ["a", "b", "c"]  # merged by name, new one appended
    a = pod["containers"][0]
    assert a["image"] == "a:1" and [e["name"] for e in a["env"]] == ["X", "Y"]
    assert a["args"] == ["two"]  # plain lists are replaced
    assert pod["tolerations"] == [{"key": "k2"}]  # no merge key in the API: replaced
    assert pod["nodeSelector"] == {"keep": "me"}  # null deletes
    assert base["spec"]["template"]["spec"]["containers"][0]["args"] == ["one"]  # input untouched

    crd = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "s"},
        "spec": {"triggers": [{"type": "kafka", "metadata": {"a": "1"}}], "maxReplicaCount": 9},
    }
    docs = [crd]
    render_k8s.apply_patch(
        docs,
        {
            "kind": "ScaledObject",
            "metadata": {"name": "s"},
            "spec": {"triggers": [{"type": "cron"}]},
        },
        "test",
    )
    assert docs[0]["spec"] == {"triggers": [{"type": "cron"}], "maxReplicaCount": 9}

    with pytest.raises(render_k8s.RenderError, match="matches 0"):
        render_k8s.apply_patch(docs, {"kind": "ScaledObject", "metadata": {"name": "nope"}}, "t")
    with pytest.raises(render_k8s.RenderError, match=r"\$patch"):
        render_k8s.apply_patch(
            docs,
            {"kind": "ScaledObject", "metadata": {"name": "s"}, "spec": {"$patch": "replace"}},
            "t",
        )


def test_render_images_and_unsupported_fields(render_k8s, tmp_path: Path) -> None:
    doc = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "w", "image": "genretag-worker"},
                        {"name": "x", "image": "registry.local:5000/other:3"},
                        {"name": "y", "image": "genretag-worker:old"},
                    ]
                }
            }
        }
    }
    render_k8s.apply_images(
        doc,
        [
            {"name": "genretag-worker", "newName": "r.io/g/w", "newTag": "2"},
            {"name": "registry.local:5000/other", "newTag": "4"},
        ],
    )
    images = [c["image"] for c in doc["spec"]["template"]["spec"]["containers"]]
    assert images == ["r.io/g/w:2", "registry.local:5000/other:4", "r.io/g/w:2"]

    (tmp_path / "kustomization.yaml").write_text(
        "resources: []\nconfigMapGenerator:\n  - name: x\n", encoding="utf-8"
    )
    with pytest.raises(render_k8s.RenderError, match="configMapGenerator"):
        render_k8s.render(tmp_path)


# -- 2. Dockerfiles ---------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _dockerignore_allowed(path: Path) -> set[str]:
    lines = (path.parent / f"{path.name}.dockerignore").read_text(encoding="utf-8").splitlines()
    assert lines and "*" in lines, "the .dockerignore should be an allowlist"
    return {line[1:].rstrip("/") for line in lines if line.startswith("!")}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_structure(path: Path) -> None:
    instructions = _instructions(path)
    words = [w for w, _ in instructions]
    assert words.count("FROM") >= 2, "multi-stage build"
    runs = " ".join(arg for w, arg in instructions if w == "RUN")
    assert "pip install -r requirements.lock" in runs or "-r /tmp/requirements.rest.txt" in runs
    assert "pip install --no-cache-dir --no-deps ." in runs
    (user,) = [arg for w, arg in instructions if w == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    entrypoint = [arg for w, arg in instructions if w == "ENTRYPOINT"][-1]
    assert entrypoint.endswith('"genretag"]')
    assert "COPY --from=builder /opt/venv /opt/venv" in [
        f"COPY {a}" for w, a in instructions if w == "COPY"
    ]

    # Everything COPY'd from the context exists and passes this Dockerfile's .dockerignore.
    allowed = _dockerignore_allowed(path)
    for word, arg in instructions:
        if word != "COPY" or arg.startswith("--from"):
            continue
        *sources, _dest = arg.split()
        for source in sources:
            assert (ROOT / source).exists(), f"{path.name}: COPY {source}: not in the repo"
            assert source.rstrip("/") in allowed, f"{path.name}: {source} is .dockerignore'd"

    # Every package that pyproject.toml installs is copied into the builder.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {
        src
        for w, arg in instructions
        if w == "COPY" and not arg.startswith("--")
        for src in arg.split()[:-1]
    }
    assert packages <= copied, f"{path.name} does not COPY {sorted(packages - copied)}"
    assert (ROOT / pyproject["project"]["readme"]).name in copied


@pytest.mark.parametrize("path", WORKER_DOCKERFILES, ids=lambda p: p.name)
def test_worker_dockerfile_runtime(path: Path) -> None:
    instructions = _instructions(path)
    runs = " ".join(arg for w, arg in instructions if w == "RUN")
    assert "apt-get install -y --no-install-recommends ffmpeg" in runs
    (healthcheck,) = [arg for w, arg in instructions if w == "HEALTHCHECK"]
    assert "/healthz" in healthcheck and "GENRETAG_METRICS_PORT" in healthcheck
    assert [arg for w, arg in instructions if w == "CMD"][-1] == '["work"]'
    env = " ".join(arg for w, arg in instructions if w == "ENV")
    assert "GENRETAG_METRICS_PORT=9100" in env
    assert "ARG MODEL_PATH" in [f"ARG {a.split('=')[0]}" for w, a in instructions if w == "ARG"]


def test_dockerignore_files_agree() -> None:
    texts = {p.read_text(encoding="utf-8") for p in DOCKER.glob("*.Dockerfile.dockerignore")}
    assert len(list(DOCKER.glob("*.Dockerfile.dockerignore"))) == len(DOCKERFILES)
    assert len(texts) == 1


def test_cpu_images_filter_the_lock_as_intended() -> None:
    """The CPU Dockerfiles grep requirements.lock: it must stay one `name==version` per line."""
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    assert "--hash" not in lock and "\\\n" not in lock, (
        "update the grep in worker-cpu/cli Dockerfiles"
    )
    lines = [line for line in lock.splitlines() if line and not line.startswith("#")]
    torch = [line for line in lines if re.match(r"^(torch|torchaudio)==", line)]
    rest = [line for line in lines if not re.match(r"^(torch|torchaudio|triton)==|^nvidia-", line)]
    assert sorted(line.split("==")[0] for line in torch) == ["torch", "torchaudio"]
    assert not any("nvidia" in line or line.startswith("triton") for line in rest)
    assert len(torch) + len(rest) + sum(
        1 for line in lines if re.match(r"^(triton==|nvidia-)", line)
    ) == len(lines)
    for path in (DOCKER / "worker-cpu.Dockerfile", DOCKER / "cli.Dockerfile"):
        text = path.read_text(encoding="utf-8")
        assert "grep -E '^(torch|torchaudio)==' requirements.lock" in text
        assert "grep -vE '^(torch|torchaudio|triton)==|^nvidia-' requirements.lock" in text


# -- 3. deploy/validate.sh --------------------------------------------------------------------


def _validate_tools_missing() -> str | None:
    bindir = Path(sys.executable).parent
    missing = [t for t in VALIDATE_TOOLS if not (bindir / t).exists()]
    if missing or importlib.util.find_spec("yaml") is None:
        what = ", ".join(missing) or "PyYAML"
        return (
            f"deploy/validate.sh tools not installed in {sys.prefix} ({what}):"
            " pip install -r deploy/requirements-validate.txt"
        )
    if shutil.which("bash") is None:
        return "no bash"
    return None


def _run_validate(deploy_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(deploy_dir / "validate.sh"), "--no-install"],
        env={**os.environ, "VALIDATE_VENV": sys.prefix},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_validate_sh_passes() -> None:
    reason = _validate_tools_missing()
    if reason:
        pytest.skip(reason)
    result = _run_validate(DEPLOY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout
    for step in (
        "hadolint",
        "compose-spec schema",
        "kubernetes-validate --strict",
        "schema keda.sh_v1alpha1_ScaledObject.json",
    ):
        assert f"PASS  {step}" in result.stdout, result.stdout


def test_validate_sh_fails_on_broken_files(tmp_path: Path) -> None:
    reason = _validate_tools_missing()
    if reason:
        pytest.skip(reason)
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("__pycache__"))
    deployment = copy / "k8s" / "base" / "deployment.yaml"
    deployment.write_text(
        deployment.read_text(encoding="utf-8").replace(
            "terminationGracePeriodSeconds:", "terminationGracePeriodSecs:"
        ),
        encoding="utf-8",
    )
    compose_file = copy / "compose.yaml"
    compose_file.write_text(
        compose_file.read_text(encoding="utf-8").replace(
            "    stop_grace_period: 120s", "    stop_grace_periods: 120s"
        ),
        encoding="utf-8",
    )
    keda = copy / "k8s" / "base" / "keda.yaml"
    keda.write_text(
        keda.read_text(encoding="utf-8").replace('lagThreshold: "200"', "lagThreshold: 200"),
        encoding="utf-8",
    )
    dockerfile = copy / "docker" / "cli.Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text(encoding="utf-8").replace(
            "WORKDIR /home/genretag", "RUN cd /home/genretag"
        ),
        encoding="utf-8",
    )

    result = _run_validate(copy)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "FAIL  hadolint deploy/docker/cli.Dockerfile" in out
    assert "FAIL  compose-spec schema" in out
    assert "FAIL  kubernetes-validate --strict -k 1.29.0 deploy/k8s/base" in out
    assert "terminationGracePeriodSecs" in out
    assert "FAIL  schema keda.sh_v1alpha1_ScaledObject.json: deploy/k8s/overlays/gpu" in out
    assert "PASS  hadolint deploy/docker/worker.Dockerfile" in out  # only the broken ones fail
