"""Deployment files (deploy/docker, deploy/docker-compose.yml, deploy/kubernetes) against the code.

No Docker engine or cluster runs here, so these tests check what can be checked without one: every
file parses; every host path the compose file mounts exists and lands where the Prometheus and
Grafana configurations look for it; the PrometheusRule carries exactly the rule groups that
promtool tests; the images' and the StatefulSet's entry points are commands and flags that
prefleak's own CLI parser accepts; the configuration each deployment gives ``prefleak serve``
(file + environment, loaded by prefleak's own settings code) listens where the health checks,
probes and scrapes look; and the HEALTHCHECK one-liner and the probe paths work against a real
``prefleak serve``.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

import pytest
import yaml

from prefleak import __version__
from prefleak.cli import build_parser
from prefleak.config import Settings, load_settings
from services import require_binary, wait_for

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "kubernetes"
PROM = DEPLOY / "prometheus"
PROMTOOL_TESTS = PROM / "tests" / "prefleak-alerts.test.yml"
GRAFANA_PROVISIONING = DEPLOY / "grafana" / "provisioning"

DAEMON_PATHS = frozenset({"/metrics", "/healthz", "/readyz", "/v1/status", "/v1/pls"})
"""GET paths of ``prefleak serve`` (src/prefleak/daemon/http.py); checked on a real one below."""
COMPOSE_SERVICES = {"kafka", "prefleak", "prometheus", "alertmanager", "grafana"}
RUNTIME_STAGES = ("runtime", "runtime-gpu")
STORE_DIR = PurePosixPath("/var/lib/prefleak")
PREFLEAK_ENV = "PREFLEAK_"


# -- helpers ------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def parse_cli(args: list[str]) -> Any:
    """``args`` as prefleak's own parser reads them; a usage error fails the test."""
    try:
        return build_parser().parse_args(args)
    except SystemExit as exc:  # argparse exits 2 on a usage error
        pytest.fail(f"`prefleak {shlex.join(args)}` is rejected by the CLI parser (exit {exc})")


def cli_commands() -> set[str]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return set(subparsers.choices or ())


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No PREFLEAK_* variable of the test process leaks into a loaded configuration."""
    for name in list(os.environ):
        if name.startswith(PREFLEAK_ENV):
            monkeypatch.delenv(name)
    return monkeypatch


def settings_with_env(
    monkeypatch: pytest.MonkeyPatch, config: Path, env: dict[str, str]
) -> Settings:
    """What ``prefleak serve --config config`` would use with the deployment's environment."""
    with monkeypatch.context() as patch:
        for name, value in env.items():
            if name.startswith(PREFLEAK_ENV):
                patch.setenv(name, value)
        return load_settings(config)


def under(path: PurePosixPath | Path, directory: PurePosixPath) -> bool:
    return PurePosixPath(path).is_relative_to(directory)


# -- Dockerfile ---------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for key, rest in self.instructions if key == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name} has no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        """ENV key=value pairs (the only form used); quotes removed, $VAR left as written."""
        values: dict[str, str] = {}
        for rest in self.all("ENV"):
            for item in shlex.split(rest):
                key, sep, value = item.partition("=")
                assert sep, f"ENV {rest!r}: use key=value"
                values[key] = value
        return values


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may also sit between continuation lines
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert match, f"cannot read FROM {rest!r}"
            stages.append(Stage(name=match.group(2) or str(len(stages)), base=match.group(1)))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
    return stages


def exec_form(rest: str) -> list[str]:
    """The JSON (exec) form of ENTRYPOINT / CMD; the shell form is not accepted."""
    value = json.loads(rest)
    assert isinstance(value, list), f"not exec form: {rest!r}"
    assert all(isinstance(part, str) for part in value)
    return value


def global_args(text: str) -> dict[str, str]:
    """ARGs declared before the first FROM, with their defaults."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("FROM"):
            break
        if line.startswith("ARG "):
            key, _, value = line[4:].strip().partition("=")
            values[key] = value
    return values


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    parsed = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    return {stage.name: stage for stage in parsed}


def test_dockerfile_is_multi_stage_with_cpu_default_and_gpu_target(
    stages: dict[str, Stage],
) -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    names = list(stages)
    assert set(RUNTIME_STAGES) <= set(names)
    # The last stage is what a plain `docker build` makes: the CPU image.
    assert names[-1] == "runtime"
    bases = global_args(text)

    def base_image(stage: Stage) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: bases[m.group(1)], stage.base)

    assert base_image(stages["runtime"]).startswith("python:3.11")
    assert base_image(stages["runtime-gpu"]).startswith("nvidia/cuda:")
    assert "runtime" in base_image(stages["runtime-gpu"])
    for name in RUNTIME_STAGES:
        copied = " ".join(stages[name].all("COPY"))
        # Runtime images take a finished environment from a builder stage, not the sources.
        assert "--from=builder" in copied
        assert "src" not in copied.split()
        assert not any("pip install" in run for run in stages[name].all("RUN"))


def test_builders_install_existing_extras_with_pinned_cpu_torch(stages: dict[str, Stage]) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = pyproject["project"]["optional-dependencies"]
    for name in ("builder", "builder-gpu"):
        declared = [a for a in stages[name].all("ARG") if a.startswith("EXTRAS=")]
        assert declared, f"{name} has no ARG EXTRAS"
        wanted = declared[-1].removeprefix("EXTRAS=").split(",")
        assert set(wanted) <= set(extras), f"{name} installs unknown extras {wanted}"
        assert "embed" in wanted
    gpu_extras = next(a for a in stages["builder-gpu"].all("ARG") if a.startswith("EXTRAS="))
    assert {"gpu", "probe"} <= set(gpu_extras.removeprefix("EXTRAS=").split(","))
    # The probe worker's training stack, and vllm for generating on the GPU.
    assert {"torch", "transformers", "peft"} <= {
        re.split(r"[<>=\[]", d)[0] for d in extras["probe"]
    }
    assert any(d.startswith("vllm") for d in extras["gpu"])
    # The CPU image resolves the embed extra's exact torch pin on the CPU wheel index.
    assert "torch==2.13.0" in extras["embed"]
    torch_index = [a for a in stages["builder"].all("ARG") if a.startswith("TORCH_INDEX=")]
    assert torch_index == ["TORCH_INDEX=https://download.pytorch.org/whl/cpu"]
    assert any('--extra-index-url "${TORCH_INDEX}"' in run for run in stages["builder"].all("RUN"))


@pytest.mark.parametrize("name", RUNTIME_STAGES)
def test_image_entrypoint_and_cmd_are_a_real_cli_invocation(
    stages: dict[str, Stage], name: str
) -> None:
    stage = stages[name]
    entrypoint = exec_form(stage.last("ENTRYPOINT"))
    cmd = exec_form(stage.last("CMD"))
    assert entrypoint == ["prefleak"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["scripts"]["prefleak"] == "prefleak.cli:main"
    args = parse_cli(cmd)
    assert args.command == "serve"
    assert args.config == Path("/etc/prefleak/prefleak.yaml")
    # The config file CMD names is baked into the image from the repository.
    copies = [c.split() for c in stage.all("COPY") if not c.startswith("--from")]
    assert ["deploy/docker/prefleak.yaml", str(args.config)] in copies


@pytest.mark.parametrize("name", RUNTIME_STAGES)
def test_image_runs_as_non_root(stages: dict[str, Stage], name: str) -> None:
    user = stages[name].last("USER")
    uid = user.split(":")[0]
    assert uid not in {"root", "0"}
    assert uid.isdigit(), "a numeric USER lets Kubernetes' runAsNonRoot verify it"
    # The user exists in the image and owns the store directory.
    runs = " ".join(stages[name].all("RUN"))
    assert f"useradd --system --uid {uid}" in runs
    assert f"chown prefleak:prefleak {STORE_DIR}" in runs


@pytest.mark.parametrize("name", RUNTIME_STAGES)
def test_image_config_volume_port_and_healthcheck_agree(
    stages: dict[str, Stage], name: str, clean_env: pytest.MonkeyPatch
) -> None:
    stage = stages[name]
    env = stage.env()
    assert env["PREFLEAK_DB"] == f"{STORE_DIR}/prefleak.db"
    assert json.loads(stage.last("VOLUME")) == [str(STORE_DIR)]
    exposed = {int(port.split("/")[0]) for port in stage.last("EXPOSE").split()}
    settings = settings_with_env(clean_env, DEPLOY / "docker" / "prefleak.yaml", env)
    assert settings.http.host == "0.0.0.0"
    assert exposed == {settings.http.port} == {9464}
    assert under(settings.db, STORE_DIR)
    assert env["PATH"].startswith("/opt/prefleak/bin:")
    # the statistics run their own threads (statistics.threads): no BLAS threads on top
    assert env["OPENBLAS_NUM_THREADS"] == "1"

    options, command = healthcheck(stage)
    assert {"--interval", "--timeout", "--start-period", "--retries"} <= set(options)
    assert command[:2] == ["python", "-c"]
    assert "'/healthz'" in command[2]
    assert "/healthz" in DAEMON_PATHS
    assert "9464" in command[2]


def healthcheck(stage: Stage) -> tuple[dict[str, str], list[str]]:
    rest = stage.last("HEALTHCHECK")
    head, sep, tail = rest.partition(" CMD ")
    assert sep, f"HEALTHCHECK without CMD: {rest!r}"
    options = dict(option.partition("=")[::2] for option in head.split())
    return options, exec_form(tail)


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    # The matcher below does not model exceptions; keep the file free of them.
    assert not any(p.startswith("!") for p in patterns)
    return patterns


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore drops ``relative`` (or a folder above it) from the build context."""
    parts = PurePosixPath(relative).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        pattern = pattern.strip("/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(
                prefix.rsplit("/", 1)[-1], pattern[3:]
            ):
                return True
    return False


def test_dockerignore_excludes_local_state_but_not_the_build_inputs(
    stages: dict[str, Stage],
) -> None:
    patterns = dockerignore_patterns()
    for unwanted in (
        ".git/HEAD",
        ".venv/bin/python",
        "prefleak.db",
        "demo.db-wal",
        "data/events.db",
        "src/prefleak/__pycache__/cli.cpython-311.pyc",
        ".pytest_cache/v",
        ".mypy_cache/3.11",
        ".ruff_cache/x",
    ):
        assert ignored(unwanted, patterns), unwanted
    sources = {
        part
        for stage in stages.values()
        for copy in stage.all("COPY")
        if not copy.startswith("--from")
        for part in copy.split()[:-1]
    }
    assert {"pyproject.toml", "README.md", "src", "deploy/docker/prefleak.yaml"} <= sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: missing from the repository"
        assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for module in ("src/prefleak/cli.py", "src/prefleak/daemon/http.py"):
        assert not ignored(module, patterns)


# -- docker-compose -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts (named volumes left out)."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (COMPOSE.parent / source).resolve()
    return mounts


def published(service: dict[str, Any]) -> dict[int, int]:
    """Container port -> host port."""
    ports: dict[int, int] = {}
    for entry in service.get("ports", []):
        host, _, container = str(entry).rpartition(":")
        ports[int(container)] = int(host)
    return ports


def test_compose_has_the_five_services_with_their_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == COMPOSE_SERVICES
    for name, service in services.items():
        assert service.get("image") or service.get("build"), name
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["alertmanager"]["image"].startswith("prom/alertmanager:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    assert published(services["prefleak"]) == {9464: 9464}
    assert published(services["prometheus"]) == {9090: 9090}
    assert published(services["alertmanager"]) == {9093: 9093}
    assert published(services["grafana"]) == {3000: 3000}
    assert 9094 in published(services["kafka"])
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    declared = set(compose.get("volumes") or {})
    assert {n for n in named if not n.startswith((".", "/"))} <= declared


def test_compose_mounted_host_paths_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
            assert source.is_relative_to(ROOT), f"{name}: {source} is outside the repository"
    build = compose["services"]["prefleak"]["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == DOCKERFILE
    assert build["target"] in RUNTIME_STAGES


def test_compose_prefleak_config_reaches_kafka_and_prometheus(
    compose: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    prefleak = services["prefleak"]
    args = parse_cli(prefleak["command"])
    assert args.command == "serve"
    mounts = bind_mounts(prefleak)
    config = mounts[str(args.config)]
    settings = settings_with_env(clean_env, config, prefleak["environment"])
    assert settings.http.host == "0.0.0.0"
    assert settings.http.port in published(prefleak)
    assert under(settings.db, STORE_DIR)
    assert any(v.endswith(f":{STORE_DIR}") for v in prefleak["volumes"])
    # Kafka: prefleak's bootstrap server is the kafka service's advertised in-network listener.
    assert settings.kafka.bootstrap_servers == ["kafka:9092"]
    kafka_env = services["kafka"]["environment"]
    assert "PLAINTEXT://kafka:9092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert prefleak["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_compose_prometheus_loads_the_tested_rules_and_scrapes_prefleak(
    compose: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    services = compose["services"]
    prometheus = services["prometheus"]
    mounts = bind_mounts(prometheus)
    flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_target = PurePosixPath(flag.partition("=")[2])
    config = load_yaml(mounts[str(config_target)])
    # rule_files resolve relative to the config file inside the container.
    loaded = {mounts[str(config_target.parent / rule)] for rule in config["rule_files"]}
    assert loaded == promtool_tested_rule_files()
    # The same rule files, in the same order, as the reference configuration.
    assert config["rule_files"] == load_yaml(PROM / "prometheus.yml")["rule_files"]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "prefleak")
    targets = [t for c in job["static_configs"] for t in c["targets"]]
    prefleak = services["prefleak"]
    port = settings_with_env(
        clean_env, bind_mounts(prefleak)["/etc/prefleak/prefleak.yaml"], prefleak["environment"]
    ).http.port
    assert targets == [f"prefleak:{port}"]
    alertmanagers = [
        target
        for manager in config["alerting"]["alertmanagers"]
        for group in manager["static_configs"]
        for target in group["targets"]
    ]
    assert alertmanagers == ["alertmanager:9093"]
    assert 9093 in published(services["alertmanager"])


def test_compose_alertmanager_and_grafana_mounts_match_their_configs(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    alertmanager = services["alertmanager"]
    flag = next(a for a in alertmanager["command"] if a.startswith("--config.file="))
    assert bind_mounts(alertmanager)[flag.partition("=")[2]] == (
        DEPLOY / "alertmanager" / "alertmanager.yml"
    )
    grafana = bind_mounts(services["grafana"])
    assert grafana["/etc/grafana/provisioning"] == GRAFANA_PROVISIONING
    datasources = load_yaml(GRAFANA_PROVISIONING / "datasources" / "prefleak.yml")
    url = urlsplit(datasources["datasources"][0]["url"])
    assert url.hostname in services
    assert url.port in published(services[url.hostname])
    providers = load_yaml(GRAFANA_PROVISIONING / "dashboards" / "prefleak.yml")["providers"]
    for provider in providers:
        host_dir = grafana[provider["options"]["path"]]
        assert list(host_dir.glob("*.json")), f"no dashboards in {host_dir}"


# -- PrometheusRule -----------------------------------------------------------------------------


def promtool_tested_rule_files() -> set[Path]:
    """The rule files the promtool unit tests load: exactly these may reach a cluster."""
    tests = load_yaml(PROMTOOL_TESTS)
    return {(PROMTOOL_TESTS.parent / name).resolve() for name in tests["rule_files"]}


def build_script() -> ModuleType:
    path = K8S / "build_prometheusrule.py"
    spec = importlib.util.spec_from_file_location("build_prometheusrule", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prometheusrule_is_up_to_date() -> None:
    script = build_script()
    committed = (K8S / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert committed == script.render(), (
        "deploy/kubernetes/prometheusrule.yaml is stale: run "
        "python deploy/kubernetes/build_prometheusrule.py"
    )
    assert script.main(["--check"]) == 0


def test_prometheusrule_carries_exactly_the_promtool_tested_groups() -> None:
    script = build_script()
    tested = promtool_tested_rule_files()
    assert {path.resolve() for path in script.RULE_FILES} == tested
    rule = load_yaml(K8S / "prometheusrule.yaml")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    # Order as deploy/prometheus/prometheus.yml loads them.
    order = [PROM / name for name in load_yaml(PROM / "prometheus.yml")["rule_files"]]
    assert [p.resolve() for p in order] == [p.resolve() for p in script.RULE_FILES]
    expected = [group for path in order for group in load_yaml(path)["groups"]]
    assert rule["spec"]["groups"] == expected


def test_prometheusrule_groups_pass_promtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool", "apt-get install -y prometheus")
    rule = load_yaml(K8S / "prometheusrule.yaml")
    rules_file = tmp_path / "prometheusrule-groups.yml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- Kubernetes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    data = load_yaml(K8S / "kustomization.yaml")
    assert isinstance(data, dict)
    return data


def objects(path: Path) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{path.name}: not an object"
    return docs


def one(kind: str) -> dict[str, Any]:
    """The one object of ``kind`` among the manifests (the config file is not a manifest)."""
    found = [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name not in {"kustomization.yaml", "prefleak.yaml"}
        for doc in objects(path)
        if doc["kind"] == kind
    ]
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def test_every_kubernetes_yaml_parses(kustomization: dict[str, Any]) -> None:
    files = sorted([*K8S.glob("*.yaml"), *K8S.glob("*.yml")])
    assert files
    config_files = {f for g in kustomization["configMapGenerator"] for f in g["files"]}
    for path in files:
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        assert docs and all(isinstance(doc, dict) for doc in docs), path.name
        if path.name not in {"kustomization.yaml", *config_files}:
            objects(path)
    resources = kustomization["resources"]
    for resource in resources:
        assert (K8S / resource).is_file(), resource
    # Every manifest is applied, except the planned probe worker (tested below).
    manifests = {p.name for p in files} - {"kustomization.yaml", *config_files}
    assert manifests - set(resources) <= {"probe-worker.yaml"}
    kinds = {doc["kind"] for r in resources for doc in objects(K8S / r)}
    assert {"StatefulSet", "Service", "ServiceMonitor", "PrometheusRule"} <= kinds


def test_kubernetes_config_is_valid_and_matches_the_container(
    kustomization: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    statefulset = one("StatefulSet")
    assert statefulset["spec"]["replicas"] == 1
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "command" not in container, "the image's ENTRYPOINT (prefleak) runs the args"
    args = parse_cli(container["args"])
    assert args.command == "serve"
    # --config names the file of the generated ConfigMap, mounted at its directory.
    (generator,) = kustomization["configMapGenerator"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(args.config.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == generator["name"]
    assert args.config.name in generator["files"]
    env = {item["name"]: item["value"] for item in container.get("env", [])}
    settings = settings_with_env(clean_env, K8S / args.config.name, env)
    assert settings.http.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": settings.http.port}
    # The store is on the claim template's volume.
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    data = next(m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"])
    assert data["mountPath"] == str(STORE_DIR)
    assert under(settings.db, STORE_DIR)
    assert claim["spec"]["resources"]["requests"]["storage"]
    # The image of the kustomization is this version of prefleak.
    (image,) = kustomization["images"]
    assert container["image"] == image["name"]
    assert image["newTag"] == __version__


def test_kubernetes_probes_hit_the_daemons_paths_and_port() -> None:
    pod = one("StatefulSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probes = {k: container[k] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for kind, probe in probes.items():
        get = probe["httpGet"]
        assert get["path"] in DAEMON_PATHS, kind
        assert get["port"] in ports or get["port"] in ports.values(), kind


def test_kubernetes_pod_is_non_root_with_resources(stages: dict[str, Stage]) -> None:
    image_uid = int(stages["runtime"].last("USER").split(":")[0])
    for kind in ("StatefulSet", "Deployment"):
        pod = one(kind)["spec"]["template"]["spec"]
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == image_uid != 0
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert {"requests", "limits"} <= set(container["resources"])
            assert "memory" in container["resources"]["limits"]


def test_service_and_servicemonitor_select_the_pod() -> None:
    statefulset = one("StatefulSet")
    service = one("Service")
    monitor = one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    # No jobLabel: the job label is the Service name, and the alerts expect job="prefleak".
    assert "jobLabel" not in monitor["spec"]
    assert service["metadata"]["name"] == "prefleak"
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    service_labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"
        assert service_ports[endpoint["port"]]["targetPort"] in port_names


def test_gpu_probe_worker_is_gpu_placed_and_applied_only_once_the_cli_has_it(
    kustomization: dict[str, Any],
) -> None:
    worker = objects(K8S / "probe-worker.yaml")
    (deployment,) = worker
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    command = container["args"][0]
    if command in cli_commands():
        parse_cli(container["args"])
    else:
        assert "probe-worker.yaml" not in kustomization["resources"], (
            f"probe-worker.yaml is applied but `prefleak {command}` does not exist yet"
        )


# -- the health checks against a real daemon ----------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """``prefleak serve`` with the image's config file, on loopback and a free port."""
    log_path = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFLEAK_ENV)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env |= {
        "PREFLEAK_HTTP__HOST": "127.0.0.1",
        "PREFLEAK_RECOMPUTE__INTERVAL_S": "0.5",
        "PREFLEAK_DIVERSITY__ENABLED": "false",
    }
    command = [sys.executable, "-m", "prefleak", "serve", "--config"]
    command += [str(DEPLOY / "docker" / "prefleak.yaml"), "--port", "0"]
    command += ["--db", str(tmp_path / "prefleak.db")]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)

    def port() -> int | None:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}:\n{log_path.read_text()}")
        match = re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics", log_path.read_text())
        return int(match.group(1)) if match else None

    try:
        yield proc, wait_for(port, what="the startup line"), log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def status_of(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status)
    except HTTPError as exc:
        return exc.code


def test_healthcheck_and_probes_work_against_a_real_daemon(
    stages: dict[str, Stage], daemon: tuple[subprocess.Popen[bytes], int, Path]
) -> None:
    proc, port, log_path = daemon
    _, command = healthcheck(stages["runtime"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFLEAK_ENV)}
    env["PREFLEAK_HTTP__PORT"] = str(port)

    def run_healthcheck() -> int:
        return subprocess.run(
            [sys.executable, *command[1:]], env=env, capture_output=True, timeout=30
        ).returncode

    assert run_healthcheck() == 0
    container = one("StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert status_of(port, container["livenessProbe"]["httpGet"]["path"]) == 200
    assert status_of(port, container["startupProbe"]["httpGet"]["path"]) == 200
    readiness = container["readinessProbe"]["httpGet"]["path"]
    wait_for(lambda: status_of(port, readiness) == 200, what=f"{readiness} to answer 200")
    for endpoint in one("ServiceMonitor")["spec"]["endpoints"]:
        assert status_of(port, endpoint["path"]) == 200
    assert status_of(port, "/no-such-path") == 404  # so the 200s above mean something

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, log_path.read_text()
    assert run_healthcheck() != 0, "the HEALTHCHECK passes with nothing listening"
    with pytest.raises(URLError):
        status_of(port, "/healthz")
