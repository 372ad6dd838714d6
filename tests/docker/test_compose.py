"""The container files against the code: docker/compose.yaml, the Dockerfile, .dockerignore and
the Kubernetes manifests.

There is no Docker engine to build or run them, so they are checked where they meet the code:
paths that exist, ``MOBIEYE_*`` variables that are real settings, commands that the real CLI
parser accepts, and the worker service run as a local process with the compose command and
environment (against a real local mosquitto), health checks included.
"""

from __future__ import annotations

import json
import os
import pwd
import queue
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from pydantic import BaseModel

from mobieye.cli import build_parser
from mobieye.config import MqttConfig, Settings, load_settings
from mobieye.runtime import free_port
from tests.e2e.conftest import stop
from tests.realparts import need

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
MOSQUITTO_CONF = DOCKER / "mosquitto.conf"
MOSQUITTO_ACL = DOCKER / "mosquitto.acl"
MOSQUITTO_PASSWD_SH = DOCKER / "mosquitto-passwd.sh"
K8S_WORKER = DOCKER / "k8s" / "base" / "worker-deployment.yaml"
K8S_MOSQUITTO = DOCKER / "k8s" / "base" / "mosquitto.yaml"
FLEET_DOC = REPO / "docs" / "fleet.md"

# Host directories the user supplies (documented in compose.yaml's header), not in the repo.
USER_SUPPLIED_DIRS = {"models", "videos", "config"}
# Variables load_settings reads itself; every other MOBIEYE_* one must be a settings field.
SHORTHAND_ENV = {"MOBIEYE_MODEL", "MOBIEYE_CONFIG", "MOBIEYE_WORKER_TOKEN"}
# Worker variables only Kubernetes sets: the pod name as id, the pod's address as its URL,
# TURN and ICE servers (tests/docker/test_k8s.py).
K8S_ONLY_ENV = {
    "MOBIEYE_WORKER__ID",
    "MOBIEYE_WORKER__ADVERTISE_URL",
    "MOBIEYE_WEBRTC__TURN__URLS",
    "MOBIEYE_WEBRTC__TURN__SECRET",
    "MOBIEYE_WEBRTC__ICE_SERVERS",
}
# Not settings: the downward API's pod address, for $(POD_IP) in the advertised URL.
K8S_HELPER_ENV = {"POD_IP"}
# Not settings: where the process keeps its cache, where the tests find their data.
PROCESS_ENV = {"MOBIEYE_CACHE_DIR", "MOBIEYE_DATA_DIR"}
# The broker's passwords, which users put in docker/.env (compose requires them).
MQTT_SECRETS = {
    "MQTT_WORKER_PASSWORD": "worker-test-password",
    "MQTT_EDGE_PASSWORD": "edge-test-password",
    "MQTT_DASHBOARD_PASSWORD": "dashboard-test-password",
}
SECRETS = {**MQTT_SECRETS, "WORKER_TOKEN": "compose-test-worker-token"}
# Secrets in Kubernetes, not plain values: compose's MQTT credentials of the services.
CREDENTIAL_ENV = {"MOBIEYE_MQTT__USERNAME", "MOBIEYE_MQTT__PASSWORD", "MOBIEYE_WORKER_TOKEN"}
HEALTHY_WITHIN_S = 120.0
ONLINE_WITHIN_S = 30.0


# --- reading the files -------------------------------------------------------------------------

_VAR = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-+?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable interpolation: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:+r}..."""

    def sub(m: re.Match[str]) -> str:
        if m.group("dollar"):
            return "$"
        name = m.group("braced") or m.group("bare")
        value = env.get(name)
        op, arg = m.group("op"), m.group("arg") or ""
        if op is None:
            return value or ""
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return arg if value is not None else ""
        if (op == ":?" and not value) or (op == "?" and value is None):
            raise ValueError(f"compose needs ${name}: {arg}")
        return value or ""

    return _VAR.sub(sub, text)


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(v, env) for v in node]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env) for k, v in node.items()}
    return node


def load_compose(env: Mapping[str, str] | None = None, secrets: bool = True) -> dict[str, Any]:
    """compose.yaml as compose sees it with the broker's passwords set (docker/.env) and only
    ``env`` besides (every other default applies); ``secrets=False``: without the passwords."""
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return dict(_interpolate_tree(data, {**(SECRETS if secrets else {}), **(env or {})}))


def services() -> dict[str, dict[str, Any]]:
    return dict(load_compose()["services"])


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment (mapping or list form); a variable without value is left out."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, None) for item in raw)
    out: dict[str, str] = {}
    for key, value in raw.items():
        if value is None:
            continue
        out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    bind: bool


def service_mounts(service: Mapping[str, Any]) -> list[Mount]:
    out = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            source, target = str(entry.get("source", "")), str(entry["target"])
            bind = entry.get("type") == "bind"
        else:
            source, _, rest = str(entry).partition(":")
            target = rest.split(":")[0]
            bind = source.startswith((".", "/", "~"))
        out.append(Mount(source, target, bind))
    return out


def publishes_fixed_host_port(entry: Any) -> bool:
    """A ports entry that names a host port ("8000:8000", published: 8000) cannot scale."""
    if isinstance(entry, dict):
        return entry.get("published") not in (None, "")
    text = str(entry).split("/")[0]
    text = re.sub(r"^\[[^\]]*\]:", "", text)  # an IPv6 host address
    parts = text.split(":")
    if len(parts) == 1:
        return False  # the container port alone: the host picks a free port
    return parts[-2] != ""  # HOST_PORT:CONTAINER_PORT or HOST_IP:HOST_PORT:CONTAINER_PORT


def healthcheck_argv(test: Any) -> list[str]:
    """A compose healthcheck test as an argv (CMD form) or a shell command (CMD-SHELL)."""
    if isinstance(test, str):
        return ["sh", "-c", test]
    kind, *rest = test
    if kind == "CMD-SHELL":
        return ["sh", "-c", rest[0]]
    assert kind == "CMD", f"healthcheck test {test!r}"
    return list(rest)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def instruction(keyword: str) -> Instruction:
    found = [i for i in dockerfile() if i.keyword == keyword]
    assert found, f"the Dockerfile has no {keyword}"
    return found[-1]  # the last one wins, as in Docker


def dockerfile_args() -> dict[str, str]:
    """The Dockerfile's build arguments and their defaults (ARG NAME=default)."""
    args: dict[str, str] = {}
    for ins in dockerfile():
        if ins.keyword == "ARG":
            name, _, default = ins.args.partition("=")
            args[name.strip()] = default.strip().strip('"')
    return args


def with_default_args(text: str) -> str:
    """An instruction's text as a build without --build-arg sees it: ${NAME} and $NAME of the
    Dockerfile's ARGs replaced by their defaults (the base image, the torch index...)."""
    args = dockerfile_args()
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)",
        lambda m: args.get(m.group(1) or m.group(2), m.group(0)),
        text,
    )


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in dockerfile():
        if ins.keyword == "ENV":
            for word in shlex.split(ins.args):
                key, sep, value = word.partition("=")
                assert sep, f"use ENV KEY=VALUE, got {word!r}"
                env[key] = value
    return env


def healthcheck_of_image() -> list[str]:
    options, sep, cmd = instruction("HEALTHCHECK").args.partition("CMD ")
    assert sep, "HEALTHCHECK without CMD"
    assert "--start-period=" in options, "give the model time to load before checks count"
    argv = json.loads(cmd)
    assert isinstance(argv, list)
    return [str(a) for a in argv]


def conf_directives(text: str) -> list[str]:
    return [
        " ".join(line.split())
        for line in text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def k8s_docs(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for doc in docs:
        assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
        assert doc.get("apiVersion") and doc.get("kind"), f"{path.name}: apiVersion and kind"
        assert doc.get("metadata", {}).get("name"), f"{path.name}: {doc['kind']} without a name"
    return docs


def k8s_object(path: Path, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in k8s_docs(path)
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{path.name}: expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def only_container(deployment: Mapping[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def image_name(image: str) -> str:
    """'registry.example.org/team/mobieye:1.2' -> 'mobieye'."""
    return image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]


def setting_path(key: str) -> tuple[str, ...] | None:
    """MOBIEYE_<SECTION>__<KEY> -> ("section", "key") when Settings has it, else None."""
    if key in SHORTHAND_ENV:
        return ()
    if not key.startswith("MOBIEYE_"):
        return None
    parts = key.removeprefix("MOBIEYE_").lower().split("__")
    model: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return None
        if i < len(parts) - 1:
            nested = field.annotation
            if not (isinstance(nested, type) and issubclass(nested, BaseModel)):
                return None
            model = nested
    return tuple(parts)


def mobieye_help(*command: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mobieye.cli", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def help_subcommands() -> set[str]:
    """The subcommands `mobieye --help` lists (one indented line each)."""
    return set(re.findall(r"^ {4}([a-z][a-z0-9-]*)(?:\s|$)", mobieye_help(), re.MULTILINE))


def parse_cli(argv: list[str]) -> Any:
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"`mobieye {shlex.join(argv)}` does not parse (exit {exc.code})")


def load_with_env(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> Settings:
    """The settings a process with exactly these MOBIEYE_* variables would load."""
    for key in list(os.environ):
        if key.startswith("MOBIEYE_") and key not in PROCESS_ENV:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


# --- compose: static checks --------------------------------------------------------------------


def test_compose_services() -> None:
    svc = services()
    assert {"mosquitto", "worker", "edge"} <= set(svc)
    assert svc["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert "profiles" not in svc["worker"] and "profiles" not in svc["mosquitto"]
    assert svc["edge"].get("profiles") == ["edge"], "the edge must not start by default"


def test_build_contexts_and_dockerfiles_exist() -> None:
    built = 0
    for name, service in services().items():
        build = service.get("build")
        if build is None:
            continue
        built += 1
        if isinstance(build, str):
            build = {"context": build}
        context = (DOCKER / build.get("context", ".")).resolve()
        assert context.is_dir(), f"{name}: build context {context} does not exist"
        dockerfile_path = (context / build.get("dockerfile", "Dockerfile")).resolve()
        assert dockerfile_path.is_file(), f"{name}: {dockerfile_path} does not exist"
        assert dockerfile_path == DOCKERFILE.resolve(), f"{name}: builds another Dockerfile"
        assert context == REPO, f"{name}: the Dockerfile copies from the repository root"
    assert built >= 1
    # Every service that runs the MobiEye image can build it, and they share one image name.
    mobieye = {n: s for n, s in services().items() if "build" in s}
    assert {"worker", "edge"} <= set(mobieye)
    assert len({s.get("image") for s in mobieye.values()}) == 1


def test_bind_mounts_exist_or_are_documented_user_dirs() -> None:
    header = COMPOSE.read_text().split("\nservices:")[0]
    declared_volumes = set(load_compose().get("volumes") or {})
    user_dirs_used = set()
    for name, service in services().items():
        for mount in service_mounts(service):
            if not mount.bind:
                assert mount.source in declared_volumes, f"{name}: undeclared volume {mount}"
                continue
            assert not mount.source.startswith(("/", "~")), (
                f"{name}: absolute host path {mount.source}; use a path relative to docker/"
            )
            host = (DOCKER / mount.source).resolve()
            if host.exists():
                assert host.is_relative_to(REPO), f"{name}: {mount.source} leaves the repository"
                continue
            rel = host.relative_to(DOCKER.resolve()).as_posix()
            assert rel in USER_SUPPLIED_DIRS, (
                f"{name}: {mount.source} is neither in the repository nor one of the documented "
                f"user-supplied directories {sorted(USER_SUPPLIED_DIRS)}"
            )
            user_dirs_used.add(rel)
    # Exactly the documented directories are the user's; each is explained in the header.
    for d in USER_SUPPLIED_DIRS:
        assert re.search(rf"^#\s+{d}/\s", header, re.MULTILINE), f"header does not document {d}/"
    assert {"models", "videos"} <= user_dirs_used


def test_mobieye_env_vars_are_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, service in services().items():
        env = service_env(service)
        for key in env:
            if key.startswith("MOBIEYE_"):
                assert setting_path(key) is not None, (
                    f"{name}: {key} is no setting (MOBIEYE_<SECTION>__<KEY> of "
                    "mobieye.config.Settings, or MOBIEYE_MODEL / MOBIEYE_CONFIG)"
                )
        mobieye_env = {k: v for k, v in env.items() if k.startswith("MOBIEYE_")}
        if mobieye_env:
            load_with_env(monkeypatch, mobieye_env)  # and their values are valid


def test_worker_settings_from_compose(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = services()["worker"]
    env = service_env(worker)
    settings = load_with_env(monkeypatch, env)
    assert settings.worker.host == "0.0.0.0", "a container must listen on its own interface"
    assert settings.webrtc.loopback_only is False
    assert settings.worker.id is None, "a fixed id would be shared by every replica"
    assert settings.detector.model is not None
    model_dir = str(Path(settings.detector.model).parent)
    assert any(m.target == model_dir and m.source == "./models" for m in service_mounts(worker))
    # The broker is the mosquitto service, on the port its config listens on.
    broker = urlsplit(settings.mqtt.broker or "")
    assert broker.hostname == "mosquitto" and "mosquitto" in services()
    listeners = [d for d in conf_directives(MOSQUITTO_CONF.read_text()) if d.startswith("listener")]
    assert listeners == [f"listener {broker.port}"]
    # The config file stays optional: unset, the worker runs on defaults and the environment.
    assert env.get("MOBIEYE_CONFIG") == ""
    configured = load_compose({"CONFIG_FILE": "/config/mobieye.yaml"})["services"]["worker"]
    assert service_env(configured)["MOBIEYE_CONFIG"] == "/config/mobieye.yaml"
    assert any(m.target == "/config" for m in service_mounts(worker))


def test_healthchecks_for_mosquitto_and_worker() -> None:
    svc = services()
    for name in ("mosquitto", "worker"):
        check = svc[name].get("healthcheck")
        assert check and not check.get("disable"), f"{name} needs a healthcheck"
        assert check["test"] and check["test"][0] != "NONE"
    assert "/healthz" in " ".join(healthcheck_argv(svc["worker"]["healthcheck"]["test"]))
    for name in ("worker", "edge"):
        assert svc[name]["depends_on"]["mosquitto"]["condition"] == "service_healthy"
    assert svc["edge"]["depends_on"]["worker"]["condition"] == "service_healthy"


def test_worker_scales() -> None:
    worker = services()["worker"]
    fixed = [p for p in worker.get("ports") or [] if publishes_fixed_host_port(p)]
    assert not fixed, f"fixed host ports {fixed} break `--scale worker=N`"
    assert "container_name" not in worker and "hostname" not in worker
    assert worker.get("network_mode") != "host"
    assert "MOBIEYE_WORKER__ID" not in service_env(worker)
    port = service_env(worker).get("MOBIEYE_WORKER__PORT", "8000")
    assert port in [str(p) for p in worker.get("expose") or []]


def test_fixed_port_detection() -> None:
    assert publishes_fixed_host_port("8000:8000")
    assert publishes_fixed_host_port("127.0.0.1:8000:8000")
    assert publishes_fixed_host_port({"target": 8000, "published": "8000"})
    assert not publishes_fixed_host_port("8000")
    assert not publishes_fixed_host_port("127.0.0.1::8000")
    assert not publishes_fixed_host_port({"target": 8000})


def test_interpolation() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("$$SYS/${SET}/$SET", env) == "$SYS/x/x"
    assert interpolate("${UNSET:-d} ${EMPTY:-d} ${EMPTY-d}", env) == "d d "
    assert interpolate("${SET:+r}${UNSET:+r}", env) == "r"
    with pytest.raises(ValueError):
        interpolate("${UNSET:?needed}", env)


def conf_value(key: str) -> str:
    found = [d.split(" ", 1)[1] for d in conf_directives(MOSQUITTO_CONF.read_text())
             if d.split(" ", 1)[0] == key]  # fmt: skip
    assert len(found) == 1, f"docker/mosquitto.conf: expected one {key}, found {found}"
    return found[0]


def container_path(service: Mapping[str, Any], path: str) -> Path | None:
    """The repository file that ``service`` mounts at ``path`` (None: not a bind mount)."""
    for mount in service_mounts(service):
        if mount.bind and mount.target == path:
            return (DOCKER / mount.source).resolve()
    return None


def test_mosquitto_config() -> None:
    mosquitto = services()["mosquitto"]
    directives = conf_directives(MOSQUITTO_CONF.read_text())
    assert "allow_anonymous false" in directives, "the broker must refuse anonymous clients"
    assert "persistence false" in directives
    # The files the config names are the repository's, mounted where it looks for them.
    assert container_path(mosquitto, "/mosquitto/config/mosquitto.conf") == MOSQUITTO_CONF
    assert container_path(mosquitto, conf_value("acl_file")) == MOSQUITTO_ACL
    # The password file is made at start by the script, from the variables of docker/.env.
    command = mosquitto["command"]
    assert command[0] == "sh" and container_path(mosquitto, command[1]) == MOSQUITTO_PASSWD_SH
    assert command[2] == conf_value("password_file")
    assert command[3:] == ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
    assert set(MQTT_SECRETS) <= set(service_env(mosquitto))


def test_compose_waits_out_a_workers_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM drains a worker (its streams move away); compose must not SIGKILL it first."""
    worker = services()["worker"]
    env = {k: v for k, v in service_env(worker).items() if k.startswith("MOBIEYE_WORKER__")}
    w = load_with_env(monkeypatch, env).worker
    grace = worker["stop_grace_period"]
    assert grace.endswith("s"), grace
    assert float(grace[:-1]) > w.drain_timeout_s + w.shutdown_timeout_s + 5, (grace, w)
    assert worker.get("init") is True  # tini hands SIGTERM to the worker, not to a shell


def test_compose_needs_the_broker_passwords() -> None:
    with pytest.raises(ValueError, match=r"docker/\.env"):
        load_compose(secrets=False)
    optional = {k: v for k, v in SECRETS.items() if k != "MQTT_DASHBOARD_PASSWORD"}
    assert load_compose(optional, secrets=False)["services"]["mosquitto"]


def test_services_log_in_with_their_role() -> None:
    """Each service's account is one the script makes from the variable it reads, and one
    that docker/mosquitto.acl names (worker: the shared account of scaled replicas)."""
    svc = services()
    broker_env = service_env(svc["mosquitto"])
    acl_users = set(re.findall(r"^user (\S+)$", MOSQUITTO_ACL.read_text(), re.MULTILINE))
    script = MOSQUITTO_PASSWD_SH.read_text()
    for name, account in (("worker", "worker"), ("edge", "edge")):
        env = service_env(svc[name])
        assert env["MOBIEYE_MQTT__USERNAME"] == account and account in acl_users
        variable = f"MQTT_{account.upper()}_PASSWORD"
        assert f'add {account} "${variable}"' in script
        assert env["MOBIEYE_MQTT__PASSWORD"] == broker_env[variable] == SECRETS[variable]


# --- the image ---------------------------------------------------------------------------------


def test_dockerfile_runs_mobieye_with_a_real_subcommand() -> None:
    # The base image is a build argument (a local Debian base in scripts/container-test.sh);
    # its default is what users get.
    assert with_default_args(instruction("FROM").args).startswith("python:3.11-slim")
    assert json.loads(instruction("ENTRYPOINT").args) == ["mobieye"]
    cmd = json.loads(instruction("CMD").args)
    assert cmd and cmd[0] in help_subcommands(), f"CMD {cmd} is no subcommand of `mobieye`"
    parse_cli(cmd)
    worker_command = services()["worker"]["command"]
    assert worker_command[0] == "worker"
    parse_cli(worker_command)


def test_dockerfile_image_settings() -> None:
    env = dockerfile_env()
    assert env.get("YOLO_AUTOINSTALL") == "false"
    assert env.get("MOBIEYE_WORKER__HOST") == "0.0.0.0"
    assert env.get("MOBIEYE_CACHE_DIR", "").startswith("/")
    for key in env:
        if key.startswith("MOBIEYE_") and key not in PROCESS_ENV:
            assert setting_path(key) is not None, f"Dockerfile ENV {key} is no setting"
    # MobiEye in its own venv (Debian's Python is externally managed), first on PATH: that is
    # the `mobieye` of the ENTRYPOINT and the `python` of the HEALTHCHECK.
    assert env["PATH"].split(":")[0] == f"{env['VIRTUAL_ENV']}/bin"
    assert any(
        i.keyword == "RUN" and f"-m venv {env['VIRTUAL_ENV']}" in i.args for i in dockerfile()
    ), "the image makes its venv"
    user = instruction("USER").args.split(":")[0]
    assert user not in ("root", "0"), "the image must run as an unprivileged user"
    assert any(
        i.keyword == "RUN" and "download.pytorch.org/whl/cpu" in with_default_args(i.args)
        for i in dockerfile()
    ), "torch must come from the CPU wheel index (TORCH_INDEX_URL's default)"
    assert any(
        i.keyword == "RUN" and re.search(r"pip install (--\S+ )*\.(\s|$)", i.args)
        for i in dockerfile()
    ), "the image installs MobiEye with `pip install .`"
    argv = healthcheck_of_image()
    assert argv[0] == "python" and "/healthz" in " ".join(argv)


def _copied_sources() -> list[str]:
    out = []
    for ins in dockerfile():
        if ins.keyword in ("COPY", "ADD"):
            words = [w for w in shlex.split(ins.args) if not w.startswith("--")]
            out += words[:-1]
    return out


def _match(path: str, pattern: str) -> bool:
    """Docker's .dockerignore matching for one pattern: * and ? stop at a slash."""
    regex = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, path) is not None


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves ``rel`` out (a match on the path or any folder above it)."""
    parts = rel.split("/")
    for pattern in patterns:
        if pattern.startswith("**/"):  # at any depth
            windows = [
                "/".join(parts[i:j])
                for i in range(len(parts))
                for j in range(i + 1, len(parts) + 1)
            ]
            if any(_match(w, pattern[3:]) for w in windows):
                return True
        elif any(_match("/".join(parts[: i + 1]), pattern) for i in range(len(parts))):
            return True
    return False


def test_dockerignore_keeps_what_the_image_copies() -> None:
    patterns = [
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith("!")
    ]
    for needed in (".git", ".venv", "artifacts", "bench-out", ".pytest_cache"):
        assert needed in patterns, f".dockerignore should exclude {needed}"
    sources = _copied_sources()
    assert {"pyproject.toml", "README.md", "mobieye", "edge_agent", "cloud_worker"} <= set(sources)
    for src in sources:
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"
        assert not _ignored(src, patterns), f"COPY {src}: excluded by .dockerignore"
        if (REPO / src).is_dir():
            for py in (REPO / src).rglob("*.py"):
                rel = py.relative_to(REPO).as_posix()
                assert not _ignored(rel, patterns), f"{rel} is excluded by .dockerignore"
    assert _ignored(".venv/bin/python", patterns) and _ignored("mobieye/__pycache__/x", patterns)


def test_edge_command_parses_with_the_real_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    edge = services()["edge"]
    command = edge["command"]
    assert command[:3] == ["edge", "--worker", "auto"]
    args = parse_cli(command)
    assert args.command == "edge" and args.worker == "auto" and args.loop
    assert args.source.startswith("/videos/")
    assert any(m.target == "/videos" and m.source == "./videos" for m in service_mounts(edge))
    settings = load_with_env(monkeypatch, service_env(edge))
    assert urlsplit(settings.mqtt.broker or "").hostname == "mosquitto"
    # `--worker auto` needs the fleet: the edge finds its worker over MQTT (--broker or env).
    help_text = mobieye_help("edge")
    if "--broker" not in help_text or "auto" not in help_text:
        pytest.xfail("`mobieye edge --worker auto --broker URL` (the fleet) is not implemented")


# --- Kubernetes --------------------------------------------------------------------------------


def test_k8s_worker_matches_the_compose_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = services()["worker"]
    deployment = k8s_object(K8S_WORKER, "Deployment")
    container = only_container(deployment)
    assert image_name(container["image"]) == image_name(worker["image"])
    assert "command" not in container, "keep the image's ENTRYPOINT (mobieye)"
    assert container["args"] == worker["command"]

    compose_env = service_env(worker)
    env_list = container["env"]
    names = [e["name"] for e in env_list]
    assert len(names) == len(set(names))
    for n in set(names) - K8S_HELPER_ENV:
        assert setting_path(n) is not None, f"{n} is no setting"
    plain = {e["name"]: str(e["value"]) for e in env_list if "value" in e}
    assert set(names) - set(compose_env) <= K8S_ONLY_ENV | CREDENTIAL_ENV | K8S_HELPER_ENV
    # The broker's credentials: test_k8s_worker_logs_in_as_the_worker_role.
    assert set(compose_env) - {"MOBIEYE_CONFIG"} - CREDENTIAL_ENV <= set(plain)
    for key, value in plain.items():
        if key not in {"MOBIEYE_MODEL", "MOBIEYE_MQTT__PASSWORD"} | K8S_ONLY_ENV:
            assert value == compose_env[key], f"{key}: {value!r} here, {compose_env[key]!r} there"
    settings = load_with_env(monkeypatch, plain)

    # The model sits in the mounted models volume, as in compose.
    model_dir = str(Path(settings.detector.model or "").parent)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert model_dir in mounts and mounts[model_dir].get("readOnly") is True
    assert any(m.target == model_dir for m in service_mounts(worker))
    assert "/var/cache/mobieye" in mounts, "the cache must be writable"

    # Probes at the worker's port: readiness on /healthz, liveness on /livez (alive while it
    # loads or drains; test_k8s.py checks them against the routes); requests and limits.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, route in (("readinessProbe", "/healthz"), ("livenessProbe", "/livez")):
        get = container[probe]["httpGet"]
        assert get["path"] == route
        assert ports.get(get["port"], get["port"]) == settings.worker.port
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])

    # The broker is the mosquitto Service; no Service fronts the workers (they advertise
    # their own URL over MQTT).
    service = k8s_object(K8S_MOSQUITTO, "Service")
    broker = urlsplit(settings.mqtt.broker or "")
    assert broker.hostname == service["metadata"]["name"]
    assert broker.port in [p["port"] for p in service["spec"]["ports"]]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for path in (K8S_WORKER, K8S_MOSQUITTO):
        for doc in k8s_docs(path):
            if doc["kind"] == "Service":
                selector = doc["spec"].get("selector", {})
                assert not (selector and selector.items() <= labels.items()), (
                    f"{path.name}: Service {doc['metadata']['name']} selects the workers"
                )


def k8s_env_from_secret(container: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """NAME -> (secret, key) for a container's variables that come from a Secret."""
    out = {}
    for entry in container.get("env") or []:
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            out[entry["name"]] = (ref["name"], ref["key"])
    return out


def test_k8s_worker_logs_in_as_the_worker_role() -> None:
    container = only_container(k8s_object(K8S_WORKER, "Deployment"))
    plain = {e["name"]: str(e.get("value")) for e in container["env"] if "value" in e}
    secret_env = k8s_env_from_secret(container)
    broker_env = k8s_env_from_secret(only_container(k8s_object(K8S_MOSQUITTO, "Deployment")))
    assert "MOBIEYE_MQTT__PASSWORD" in secret_env, "the broker refuses anonymous clients"
    assert "MOBIEYE_WORKER_TOKEN" in secret_env, "a worker beyond loopback needs its token"
    assert plain.get("MOBIEYE_MQTT__USERNAME") == "worker", "the replicas' shared account"
    assert secret_env["MOBIEYE_MQTT__PASSWORD"] == broker_env["MQTT_WORKER_PASSWORD"]
    assert "MOBIEYE_MQTT__PASSWORD" not in plain, "a password belongs in a Secret"


def test_k8s_mosquitto_matches_compose() -> None:
    mosquitto = services()["mosquitto"]
    deployment = k8s_object(K8S_MOSQUITTO, "Deployment")
    container = only_container(deployment)
    assert container["image"] == mosquitto["image"]
    config = k8s_object(K8S_MOSQUITTO, "ConfigMap")
    assert conf_directives(config["data"]["mosquitto.conf"]) == conf_directives(
        MOSQUITTO_CONF.read_text()
    ), "the ConfigMap's mosquitto.conf differs from docker/mosquitto.conf"
    for key, path in (
        ("mosquitto.acl", MOSQUITTO_ACL),
        ("mosquitto-passwd.sh", MOSQUITTO_PASSWD_SH),
    ):
        assert config["data"][key] == path.read_text(), f"the ConfigMap's {key} differs from {path}"
    # Mounted where compose mounts them, run the same way, passwords from the Secret.
    mounts = {m["mountPath"]: m.get("subPath") for m in container["volumeMounts"]}
    for mount in service_mounts(mosquitto):
        assert mounts.get(mount.target) == Path(mount.source).name, f"{mount.target} not mounted"
    assert "command" not in container, "keep the image's entrypoint"
    assert container["args"] == mosquitto["command"]
    from_secret = k8s_env_from_secret(container)
    assert set(from_secret) == set(MQTT_SECRETS)
    assert {secret for secret, _ in from_secret.values()} == {"mobieye-mqtt"}
    probe = " ".join(container["livenessProbe"]["exec"]["command"])
    assert "-u edge" in probe and "$MQTT_EDGE_PASSWORD" in probe
    service = k8s_object(K8S_MOSQUITTO, "Service")
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        target = container_ports.get(port["targetPort"], port["targetPort"])
        assert target == 1883
    selector = service["spec"]["selector"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_fleet_doc_names_real_files() -> None:
    text = FLEET_DOC.read_text()
    assert "docker compose -f docker/compose.yaml up" in text and "--scale worker=" in text
    for path in set(re.findall(r"\bdocker/[\w./-]+\.(?:yaml|conf|md)\b|\bdocker/Dockerfile", text)):
        assert (REPO / path).exists(), f"docs/fleet.md names {path}, which does not exist"


# --- the worker service, run as a local process ------------------------------------------------


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@dataclass
class Broker:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def client_ids(self) -> list[str]:
        """Client ids that connected so far (mosquitto logs each connection)."""
        return re.findall(r"New client connected from \S+ as (\S+)", self.log.read_text())


@dataclass
class LocalWorker:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, within_s: float = HEALTHY_WITHIN_S) -> httpx.Response:
        deadline = time.monotonic() + within_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"worker exited with {self.proc.returncode}:\n{tail(self.log)}")
            try:
                response = httpx.get(self.url + "/healthz", timeout=2, trust_env=False)
                if response.status_code == 200:
                    return response
                last = f"{response.status_code} {response.text}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.25)
        pytest.fail(f"/healthz not 200 within {within_s:.0f} s ({last}):\n{tail(self.log)}")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The compose mosquitto service as a local process: its command (the password file made
    by docker/mosquitto-passwd.sh from the service's environment, then the broker) with its
    container paths mapped to the mounted repository files, and docker/mosquitto.conf with
    the listener moved to 127.0.0.1:PORT."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        need("mosquitto")
    service = services()["mosquitto"]
    tmp = tmp_path_factory.mktemp("mosquitto")
    port = free_port()
    local = {"/usr/sbin/mosquitto": binary, "/mosquitto/config/mosquitto.conf": str(tmp / "conf")}
    local[conf_value("password_file")] = str(tmp / "passwd")

    def here(path: str) -> str:
        mounted = container_path(service, path)
        return local.get(path) or (str(mounted) if mounted else path)

    lines = []
    for line in MOSQUITTO_CONF.read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "listener":
            lines.append(f"listener {port} 127.0.0.1")
        elif key in ("password_file", "acl_file"):
            lines.append(f"{key} {here(value.strip())}")
        elif key != "log_dest":
            lines.append(line)
    lines.append("log_dest stderr")  # unbuffered: read while it runs
    # Run as whoever runs the tests: as root, mosquitto would switch to its own user, which a
    # user namespace (the loopback-only test sandbox) does not allow.
    lines.append(f"user {pwd.getpwuid(os.getuid()).pw_name}")
    (tmp / "conf").write_text("\n".join(lines) + "\n")
    argv = [here(a) for a in service["command"]]
    env = {**os.environ, **service_env(service)}
    log = tmp / "mosquitto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {proc.returncode}:\n{tail(log)}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mosquitto does not listen on {port}:\n{tail(log)}")
                time.sleep(0.1)
        yield Broker(port, proc, log)
    finally:
        stop(proc)


def compose_worker_env(
    broker_port: int, worker_port: int, model: Path, cache: Path
) -> dict[str, str]:
    """The worker container's environment, translated to this machine.

    The image's ENV, then the compose service's, with the broker host ``mosquitto`` replaced by
    the local broker, ``/models/...`` by the real model, the cache by a temporary one and the
    bind address by 127.0.0.1 on a free port (the container's 0.0.0.0 is its own interface).
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("MOBIEYE_") or k.lower().endswith("_proxy"))
    }
    for key, value in dockerfile_env().items():
        # Not pip's settings, nor where the image keeps its virtual environment (PATH).
        if not key.startswith("PIP_") and key not in ("PATH", "VIRTUAL_ENV"):
            env[key] = value.replace("/var/cache/mobieye", str(cache))
    compose = service_env(services()["worker"])
    broker = urlsplit(compose["MOBIEYE_MQTT__BROKER"])
    assert broker.hostname == "mosquitto"
    compose["MOBIEYE_MQTT__BROKER"] = f"{broker.scheme}://127.0.0.1:{broker_port}"
    assert compose["MOBIEYE_MODEL"] == f"/models/{model.name}", "the default model is the test's"
    compose["MOBIEYE_MODEL"] = str(model)
    env.update(compose)
    env.update(
        MOBIEYE_WORKER__HOST="127.0.0.1",
        MOBIEYE_WORKER__PORT=str(worker_port),
        YOLO_OFFLINE="1",
        MOBIEYE_LOG_LEVEL="INFO",
    )
    return env


@pytest.fixture(scope="module")
def compose_worker(
    broker: Broker, model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalWorker]:
    """`mobieye worker` with the compose command and environment, as the image would run it."""
    tmp = tmp_path_factory.mktemp("compose-worker")
    port = free_port()
    env = compose_worker_env(broker.port, port, model_path, tmp / "cache")
    entrypoint = json.loads(instruction("ENTRYPOINT").args)
    script = Path(sys.executable).parent / entrypoint[0]
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "mobieye.cli"]
    argv += entrypoint[1:] + list(services()["worker"]["command"])
    log = tmp / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield LocalWorker(port, proc, log, env)
    finally:
        stop(proc)


@pytest.mark.slow
def test_worker_service_becomes_healthy(compose_worker: LocalWorker) -> None:
    response = compose_worker.wait_healthy()
    body = response.json()
    assert body["status"] == "ok"
    assert body["worker_id"] == f"{socket.gethostname()}-{compose_worker.port}"


@pytest.mark.slow
def test_worker_and_image_healthchecks_pass(compose_worker: LocalWorker) -> None:
    compose_worker.wait_healthy()
    compose_check = healthcheck_argv(services()["worker"]["healthcheck"]["test"])
    for name, argv in (("compose", compose_check), ("Dockerfile", healthcheck_of_image())):
        assert argv[0] == "python"
        command = [sys.executable, *argv[1:]]
        env = {k: v for k, v in compose_worker.env.items() if k != "MOBIEYE_WORKER__PORT"}
        ok = subprocess.run(
            command, env={**env, "MOBIEYE_WORKER__PORT": str(compose_worker.port)}, timeout=30
        )
        assert ok.returncode == 0, f"the {name} healthcheck fails on a healthy worker"
        down = subprocess.run(
            command,
            env={**env, "MOBIEYE_WORKER__PORT": str(free_port())},
            capture_output=True,
            timeout=30,
        )
        assert down.returncode != 0, f"the {name} healthcheck passes with no worker"


@pytest.mark.slow
def test_mosquitto_healthcheck_passes(broker: Broker) -> None:
    if shutil.which("mosquitto_sub") is None:
        need("mosquitto-clients")
    service = services()["mosquitto"]
    argv = healthcheck_argv(service["healthcheck"]["test"])
    assert argv[:2] == ["sh", "-c"] and " -p 1883 " in argv[2]
    argv[2] = argv[2].replace(" -p 1883 ", f" -p {broker.port} ")
    env = {**os.environ, **service_env(service)}  # the container's environment
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    # And it tells: a broker that refuses the check's login is unhealthy.
    wrong = {**env, "MQTT_EDGE_PASSWORD": "not-the-password"}
    done = subprocess.run(argv, env=wrong, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0


def _retained_states(port: int, topic_filter: str, listen_s: float) -> list[tuple[str, bytes]]:
    """Retained messages a fresh subscriber gets on ``topic_filter``, logged in as the compose
    edge service (the read-only role)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"compose-test-{os.getpid()}-{time.time_ns()}"
    )
    edge = service_env(services()["edge"])
    client.username_pw_set(edge["MOBIEYE_MQTT__USERNAME"], edge["MOBIEYE_MQTT__PASSWORD"])

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        c.subscribe(topic_filter, qos=1)

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        got.put((msg.topic, bytes(msg.payload), bool(msg.retain)))

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        time.sleep(listen_s)
    finally:
        client.loop_stop()
        client.disconnect()
    out = []
    while not got.empty():
        topic, payload, retained = got.get()
        if retained:
            out.append((topic, payload))
    return out


def _says_online(payload: bytes) -> dict[str, Any] | None:
    try:
        state = json.loads(payload)
    except ValueError:
        return None
    return state if isinstance(state, dict) and state.get("status") == "online" else None


@pytest.mark.slow
def test_worker_announces_a_retained_online_state(
    compose_worker: LocalWorker, broker: Broker
) -> None:
    compose_worker.wait_healthy()
    prefix = MqttConfig().prefix
    worker_id = f"{socket.gethostname()}-{compose_worker.port}"
    expected = f"{prefix}/workers/{worker_id}/state"
    seen: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + ONLINE_WITHIN_S
    while time.monotonic() < deadline:
        seen = _retained_states(broker.port, f"{prefix}/workers/+/state", 1.0)
        states = [_says_online(p) for t, p in seen if t == expected]
        online = [s for s in states if s is not None]
        if online:
            assert online[-1].get("id") == worker_id
            if "url" in online[-1]:
                assert online[-1]["url"] == compose_worker.url
            return
    # Not ours: this test's subscribers and mosquitto_sub's generated ids (the healthcheck).
    others = [c for c in broker.client_ids() if not c.startswith(("compose-test-", "auto-"))]
    if not others:
        pytest.fail(f"`mobieye worker` never connected to the broker:\n{tail(compose_worker.log)}")
    pytest.fail(
        f"no retained online state on {expected} within {ONLINE_WITHIN_S:.0f} s "
        f"(clients {others}; retained: {seen}):\n{tail(compose_worker.log)}"
    )
