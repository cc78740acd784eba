"""deploy/: settings names, the compose stack, and deploy/validate.sh.

Kubernetes manifests: test_deploy_k8s.py; images: test_deploy_images.py. The structural tests
need PyYAML; the env-var test does not. ``test_validate_sh_*`` run the real linters/validators
(hadolint, check-jsonschema, kubectl kustomize, kubernetes-validate, Docker Compose) when
deploy/requirements-validate.txt is installed in this interpreter's venv, and skip otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from genretag.core import settings as settings_module
from genretag.core.settings import Settings
from genretag.producer.settings import ProducerSettings
from tests.deploy.deploy_support import DEPLOY, ROOT, settings_from_env
from genretag.worker.settings import WorkerSettings


ENV_NAME = re.compile(r"\bGENRETAG_[A-Z0-9_]*[A-Z0-9]\b")
# GENRETAG_* variables that genretag reads with os.environ rather than as settings fields;
# each maps to the text that proves genretag/ still reads it.
NON_SETTING_VARS = {
    "GENRETAG_STATE_DIR": 'f"{ENV_PREFIX}STATE_DIR"',
    "GENRETAG_TANSU_BIN": '"GENRETAG_TANSU_BIN"',
}
VALIDATE_TOOLS = ("hadolint", "check-jsonschema", "kubernetes-validate", "kubectl")


def setting_env_names() -> set[str]:
    classes = [
        obj
        for obj in vars(settings_module).values()
        if isinstance(obj, type) and issubclass(obj, Settings) and obj is not Settings
    ] + [WorkerSettings, ProducerSettings]
    return {name for cls in classes for name in cls.env_names()}


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
                        for folder in ("genretag/cli", "genretag/core")
                        for p in (ROOT / folder).rglob("*.py"))
    for name, proof in NON_SETTING_VARS.items():
        assert proof in source, f"{name} is no longer read in genretag/cli/ or genretag/core/: drop it"
        assert name not in setting_env_names()


# -- helpers for the YAML tests ---------------------------------------------------------------


@pytest.fixture(scope="module")
def yaml():
    return pytest.importorskip(
        "yaml", reason="PyYAML not installed (deploy/requirements-validate.txt)"
    )


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
    assert settings.model.device == ("cuda" if gpu else "cpu")
    assert settings.kafka.bootstrap_servers == ["kafka:9092"]
    assert settings.health.metrics_port == 9100
    assert str(settings.model.path).startswith("/models/")
    assert settings.access.allowed_roots == ["/music"]
    assert (
        settings.redis.password is not None and settings.redis.password.get_secret_value() == "pw"
    )
    assert settings.kafka.partitions == 12
    mounts = {v.split(":")[1] for v in interpolate(compose["services"]["worker"]["volumes"], {})}
    assert {"/models", "/music"} <= mounts


def test_compose_producer_env_is_valid_producer_settings(
    compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer = compose["services"]["producer"]
    env = interpolate(compose_env(producer), {"GENRETAG_REDIS_PASSWORD": "pw"})
    settings = settings_from_env(ProducerSettings, env, monkeypatch)
    assert settings.kafka.topic == "genretag.tracks"
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


@pytest.mark.heavy  # a subprocess or external tools
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
        "kubectl kustomize deploy/k8s/overlays/gpu",
        "kubernetes-validate --strict",
        "schema keda.sh_v1alpha1_ScaledObject.json",
    ):
        assert f"PASS  {step}" in result.stdout, result.stdout


@pytest.mark.heavy  # a subprocess or external tools
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
