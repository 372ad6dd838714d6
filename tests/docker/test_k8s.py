"""The Kubernetes manifests (docker/k8s) against Kubernetes' own schemas and against the code.

There is no cluster and no kustomize here. The kustomizations hold only ``resources:`` (and a
``namespace:``), so what ``kubectl apply -k`` would send is exactly the files they list: each
object is validated offline with ``kubernetes-validate`` (the API's JSON schemas, strict: an
unknown field is an error), then checked where it meets the code: images, ``MOBIEYE_*``
variables that are real settings with valid values, commands the real CLI parser accepts, probe
paths the worker's and the dashboard's apps serve without a token, ports, the drain's time
budget, the metrics the autoscaler reads, coturn's authentication and the Secrets it all needs.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]  # the test extras: API schemas
import pytest
import yaml
from fastapi.testclient import TestClient

from cloud_worker.guard import METRICS_PATH, OPEN_PATHS, WorkerGuard
from cloud_worker.metrics import WorkerMetrics
from cloud_worker.routes import router as worker_router
from mobieye.config import MqttConfig, Settings, WorkerConfig
from mobieye.dashboard import auth as dashboard_auth
from mobieye.dashboard.app import create_dashboard_app
from mobieye.fleet.allowlist import UrlAllowlist
from mobieye.fleet.presence import advertised_url
from mobieye.runtime import is_loopback_host
from tests.docker.test_compose import (
    DOCKER,
    MOSQUITTO_ACL,
    MOSQUITTO_PASSWD_SH,
    REPO,
    conf_value,
    image_name,
    k8s_docs,
    load_with_env,
    parse_cli,
    services,
    setting_path,
)

K8S = DOCKER / "k8s"
BASE = K8S / "base"
ADAPTER = K8S / "prometheus-adapter"
KUSTOMIZATIONS = (BASE, ADAPTER)
K8S_DOC = REPO / "docs" / "k8s.md"
# The Kubernetes API the manifests are validated against (a version kubernetes-validate ships;
# the objects used are all GA well before it: apps/v1, policy/v1, autoscaling/v2).
K8S_VERSION = "1.30"
# What kustomize may do with the files beyond listing them: nothing this test doesn't apply.
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "namespace"}
# Example values for the downward API, to expand $(VAR) references as the kubelet would.
DOWNWARD = {
    "metadata.name": "mobieye-worker-7d9f8c6b5-x2x4q",
    "metadata.namespace": "mobieye",
    "status.podIP": "10.244.1.7",
    "status.hostIP": "192.168.1.10",
}
# Images the manifests may run: the MobiEye image (compose's), the broker (compose's) and a
# pinned coturn release (never a moving "latest").
COTURN_IMAGE = re.compile(r"^coturn/coturn:\d+\.\d+(\.\d+)?(-r\d+)?(-alpine|-debian)?$")
MARGIN_S = 5  # the grace period must exceed drain + shutdown by more than this


# --- reading the kustomizations ------------------------------------------------------------------


def kustomization(directory: Path) -> dict[str, Any]:
    data = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert isinstance(data, dict), f"{directory}/kustomization.yaml is not a mapping"
    assert data.get("apiVersion") == "kustomize.config.k8s.io/v1beta1"
    assert data.get("kind") == "Kustomization"
    return data


def built(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """What `kustomize build DIRECTORY` gives: each listed file's objects, the namespace set."""
    k = kustomization(directory)
    out = []
    for name in k.get("resources") or []:
        path = directory / name
        for doc in k8s_docs(path):
            if "namespace" in k:
                doc = {**doc, "metadata": {**doc["metadata"], "namespace": k["namespace"]}}
            out.append((path, doc))
    return out


def base_objects() -> list[dict[str, Any]]:
    return [doc for _, doc in built(BASE)]


def obj(kind: str, name: str, objects: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    found = [
        d
        for d in (objects if objects is not None else base_objects())
        if d["kind"] == kind and d["metadata"]["name"] == name
    ]
    assert len(found) == 1, f"expected one {kind} {name} in the base, found {len(found)}"
    return found[0]


def workloads(objects: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    kinds = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
    return [d for d in (objects if objects is not None else base_objects()) if d["kind"] in kinds]


def pod_spec(workload: Mapping[str, Any]) -> dict[str, Any]:
    return dict(workload["spec"]["template"]["spec"])


def containers(workload: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return list(spec.get("initContainers") or []) + list(spec["containers"])


def the_container(workload: Mapping[str, Any]) -> dict[str, Any]:
    found = pod_spec(workload)["containers"]
    assert len(found) == 1, f"{workload['metadata']['name']}: one container expected"
    return dict(found[0])


WORKER = ("Deployment", "mobieye-worker")
DASHBOARD = ("Deployment", "mobieye-dashboard")
TURN = ("Deployment", "mobieye-turn")
BROKER = ("Deployment", "mosquitto")


def worker_container() -> dict[str, Any]:
    return the_container(obj(*WORKER))


# --- Kubernetes' semantics, as far as the checks need them -----------------------------------

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's $(VAR) expansion: defined variables are replaced, $$ is a literal $, and an
    undefined reference stays as written."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _REF.sub(sub, text)


def references(text: str) -> set[str]:
    return {m.group(1) for m in _REF.finditer(text) if m.group(1)}


_UNITS = {
    "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40,
}  # fmt: skip


def quantity(value: Any) -> float:
    """A Kubernetes quantity ("700m", "2", "2Gi") as a number."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)", str(value))
    assert m and m.group(2) in _UNITS, f"not a quantity: {value!r}"
    return float(m.group(1)) * _UNITS[m.group(2)]


def container_env(container: Mapping[str, Any]) -> dict[str, str]:
    """The variables the kubelet gives the container, in order: plain values expanded from the
    ones above them, downward-API fields as example values; Secret values left out."""
    out: dict[str, str] = {}
    for entry in container.get("env") or []:
        if "value" in entry:
            out[entry["name"]] = expand(str(entry["value"]), out)
            continue
        field = ((entry.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field:
            assert field in DOWNWARD, f"{entry['name']}: no example value for {field}"
            out[entry["name"]] = DOWNWARD[field]
    return out


def secret_refs(container: Mapping[str, Any]) -> dict[str, tuple[str, str, bool]]:
    """NAME -> (secret, key, optional) for the container's variables from Secrets."""
    out = {}
    for entry in container.get("env") or []:
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            out[entry["name"]] = (ref["name"], ref["key"], bool(ref.get("optional")))
    return out


def settings_of(container: Mapping[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    env = {k: v for k, v in container_env(container).items() if k.startswith("MOBIEYE_")}
    return load_with_env(monkeypatch, env)


def port_number(container: Mapping[str, Any], port: Any, protocol: str = "TCP") -> int:
    """A probe's or Service's port (a number, or a container port's name) as the number."""
    if isinstance(port, int):
        return port
    found = [
        p["containerPort"]
        for p in container.get("ports") or []
        if p.get("name") == port and p.get("protocol", "TCP") == protocol
    ]
    assert found, f"{container['name']}: no {protocol} container port named {port!r}"
    return int(found[0])


def selects(selector: Mapping[str, str], workload: Mapping[str, Any]) -> bool:
    labels = workload["spec"]["template"]["metadata"].get("labels") or {}
    return bool(selector) and selector.items() <= labels.items()


def flags(args: list[str]) -> dict[str, str | None]:
    """coturn's arguments: --name=value or --name (and -n) as name -> value or None."""
    out: dict[str, str | None] = {}
    for arg in args:
        assert arg.startswith("-"), f"coturn argument {arg!r}: use --name=value"
        name, sep, value = arg.lstrip("-").partition("=")
        assert name not in out, f"coturn argument --{name} given twice"
        out[name] = value if sep else None
    return out


def registry_names() -> set[str]:
    """Every metric family and sample name a worker exports (cloud_worker/metrics.py)."""
    names = set()
    for family in WorkerMetrics().registry.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
    return names


def adapter_rules() -> list[dict[str, Any]]:
    config = obj("ConfigMap", "mobieye-adapter-rules", [d for _, d in built(ADAPTER)])
    data = yaml.safe_load(config["data"]["config.yaml"])
    assert isinstance(data, dict) and isinstance(data.get("rules"), list) and data["rules"]
    return list(data["rules"])


def exposed_name(rule: Mapping[str, Any], series: str) -> str | None:
    """The custom-metrics API name the adapter gives ``series`` under ``rule`` (its naming:
    ``matches`` then ``as``, defaulting to the whole match or the one capture group)."""
    naming = rule.get("name") or {}
    m = re.search(naming.get("matches", ".*"), series)
    if m is None:
        return None
    template = naming.get("as") or ("$1" if m.re.groups == 1 else "$0")
    return re.sub(r"\$\{?(\d+)\}?", lambda g: m.group(int(g.group(1))) or "", template)


# --- the helpers themselves --------------------------------------------------------------------


def test_helpers() -> None:
    assert expand("http://$(POD_IP):8000", {"POD_IP": "10.0.0.1"}) == "http://10.0.0.1:8000"
    assert expand("$(UNSET) $$(POD_IP)", {"POD_IP": "x"}) == "$(UNSET) $(POD_IP)"
    assert references("--a=$(A) $$(B) $(C)") == {"A", "C"}
    assert quantity("700m") == pytest.approx(0.7) and quantity("2") == 2
    assert quantity("2Gi") == 2 * 2**30
    assert flags(["-n", "--realm=x", "--no-cli"]) == {"n": None, "realm": "x", "no-cli": None}
    rule = {"name": {"matches": "^(.*)_total$", "as": "${1}_per_second"}}
    assert exposed_name(rule, "http_requests_total") == "http_requests_per_second"
    assert exposed_name({"name": {"matches": "^a$"}}, "a") == "a"


# --- the kustomizations ------------------------------------------------------------------------


def test_kustomizations_list_every_manifest() -> None:
    for directory in KUSTOMIZATIONS:
        k = kustomization(directory)
        extra = set(k) - KUSTOMIZATION_KEYS
        assert not extra, (
            f"{directory.name}/kustomization.yaml uses {sorted(extra)}: this test validates the "
            "listed files as they are, so a transformer would go unchecked"
        )
        listed = list(k.get("resources") or [])
        assert listed and len(listed) == len(set(listed)), f"{directory.name}: resources"
        for name in listed:
            path = directory / name
            assert "/" not in name and path.is_file(), f"{directory.name}: no file {name} here"
        on_disk = {p.name for p in directory.iterdir() if p.suffix in (".yaml", ".yml")}
        orphans = on_disk - {"kustomization.yaml"} - set(listed)
        assert not orphans, f"{directory.name}: {sorted(orphans)} are in no kustomization"
    # Nothing else under docker/k8s: every manifest belongs to one of the kustomizations.
    strays = [
        p.relative_to(K8S).as_posix()
        for p in K8S.rglob("*")
        if p.is_file() and p.parent not in KUSTOMIZATIONS
    ]
    assert not strays, f"docker/k8s: {strays} belong to no kustomization"
    assert {d.name for d in K8S.iterdir() if d.is_dir()} == {d.name for d in KUSTOMIZATIONS}


def test_base_has_the_whole_fleet() -> None:
    objects = base_objects()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in objects}
    assert len(kinds) == len(objects), "two objects of one kind share a name"
    assert {
        ("ConfigMap", "mosquitto-config"), BROKER, ("Service", "mosquitto"),
        WORKER, ("HorizontalPodAutoscaler", "mobieye-worker"),
        ("PodDisruptionBudget", "mobieye-worker"),
        DASHBOARD, ("Service", "mobieye-dashboard"),
        TURN, ("Service", "mobieye-turn"),
    } <= kinds  # fmt: skip
    for d in objects:
        assert "namespace" not in d["metadata"], "the namespace is the overlay's (or -n)"
        assert d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "mobieye"


# --- Kubernetes' schemas -----------------------------------------------------------------------


def validation_problems(doc: dict[str, Any]) -> str | None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "(top)"
        return f"{where}: {exc.message}"
    except kubernetes_validate.SchemaNotFoundError as exc:
        return str(exc.message)
    return None


def test_manifests_validate_against_kubernetes_schemas() -> None:
    problems = []
    count = 0
    for directory in KUSTOMIZATIONS:
        for path, doc in built(directory):
            count += 1
            problem = validation_problems(doc)
            if problem:
                name = f"{doc['kind']}/{doc['metadata']['name']}"
                problems.append(f"{path.relative_to(K8S)}: {name}: {problem}")
    assert count >= 10
    assert not problems, "\n".join(problems)


def test_the_schema_check_catches_mistakes() -> None:
    good = obj(*WORKER)
    assert validation_problems(good) is None
    typo = copy.deepcopy(good)
    typo["spec"]["template"]["spec"]["terminationGracePeriod"] = 40  # strict: unknown field
    assert validation_problems(typo)
    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    assert validation_problems(wrong_type)
    hpa = copy.deepcopy(obj("HorizontalPodAutoscaler", "mobieye-worker"))
    hpa["spec"]["metrics"][0]["type"] = "Pod"
    del hpa["spec"]["minReplicas"]
    hpa["spec"]["maxReplicas"] = "20"
    assert validation_problems(hpa)


# --- images, commands, environment -------------------------------------------------------------


def test_images_are_the_fleets() -> None:
    compose = services()
    mobieye_image = compose["worker"]["image"]
    broker_image = compose["mosquitto"]["image"]
    seen = set()
    for workload in workloads():
        for c in containers(workload):
            image = c["image"]
            seen.add(image_name(image))
            if image_name(image) == image_name(mobieye_image):
                assert image == mobieye_image, f"{c['name']}: {image}, not {mobieye_image}"
            elif image_name(image) == image_name(broker_image):
                assert image == broker_image, f"{c['name']}: {image}, not compose's {broker_image}"
            else:
                assert COTURN_IMAGE.match(image), f"{c['name']}: unexpected image {image}"
    assert seen == {"mobieye", "eclipse-mosquitto", "coturn"}


def mobieye_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for workload in workloads():
        for c in containers(workload):
            if image_name(c["image"]) == "mobieye":
                yield workload["metadata"]["name"], c


def test_mobieye_containers_run_real_commands() -> None:
    seen = {}
    for name, c in mobieye_containers():
        assert "command" not in c, f"{name}: keep the image's ENTRYPOINT (mobieye)"
        args = parse_cli([str(a) for a in c["args"]])
        seen[name] = args.command
    assert seen == {"mobieye-worker": "worker", "mobieye-dashboard": "dashboard"}


def test_mobieye_env_vars_are_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, c in mobieye_containers():
        entries = c.get("env") or []
        names = [e["name"] for e in entries]
        assert len(names) == len(set(names)), f"{name}: a variable is set twice"
        used = set().union(*(references(str(e.get("value", ""))) for e in entries))
        for entry in entries:
            var = entry["name"]
            if var.startswith("MOBIEYE_"):
                assert setting_path(var) is not None or var == dashboard_auth.TOKEN_ENV, (
                    f"{name}: {var} is no setting (MOBIEYE_<SECTION>__<KEY> of "
                    "mobieye.config.Settings, or one load_settings / the dashboard reads)"
                )
            else:
                # Only helpers for $(VAR) expansion, e.g. POD_IP for the advertised URL.
                assert var in used, f"{name}: {var} is neither a setting nor used by one"
        # Plain values (with the downward API expanded) load as valid settings.
        settings_of(c, monkeypatch)


def test_env_references_are_defined_above() -> None:
    """The kubelet expands $(VAR) in a value only from variables defined before it (and in
    args from any of them); anything else is passed on as the literal text."""
    for workload in workloads():
        for c in containers(workload):
            defined: set[str] = set()
            for entry in c.get("env") or []:
                missing = references(str(entry.get("value", ""))) - defined
                assert not missing, f"{c['name']}: {entry['name']} uses {missing} before them"
                defined.add(entry["name"])
            for arg in [*(c.get("command") or []), *(c.get("args") or [])]:
                missing = references(str(arg)) - defined
                assert not missing, f"{c['name']}: argument {arg!r} uses undefined {missing}"


# --- the worker ----------------------------------------------------------------------------------


def worker_paths() -> set[str]:
    return {getattr(r, "path", "") for r in worker_router.routes}


def guard_lets_through(path: str, metrics_token: str | None) -> int:
    """The status a request without credentials gets from the worker's real front door."""

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = WorkerGuard(inner, "the-worker-token", metrics_token, 64 * 1024, lambda _r: None)
    return int(TestClient(guard).get(path).status_code)


def test_worker_probes_are_open_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    container = worker_container()
    settings = settings_of(container, monkeypatch)
    expected = {"startupProbe": "/healthz", "readinessProbe": "/healthz", "livenessProbe": "/livez"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, f"{probe} on {get['path']}, not {path}"
        assert get["path"] in worker_paths(), f"the worker serves no {get['path']}"
        assert get["path"] in OPEN_PATHS, f"{get['path']} wants the token, which probes lack"
        assert guard_lets_through(get["path"], settings.worker.metrics_token) == 200
        assert port_number(container, get["port"]) == settings.worker.port
    assert guard_lets_through("/offer", None) == 401, "the guard check itself"


def test_worker_port_and_scrape_annotations(monkeypatch: pytest.MonkeyPatch) -> None:
    workload = obj(*WORKER)
    container = worker_container()
    settings = settings_of(container, monkeypatch)
    ports = [p["containerPort"] for p in container["ports"]]
    assert ports == [settings.worker.port], "the container port is the one the worker binds"
    assert settings.worker.host == "0.0.0.0"
    notes = workload["spec"]["template"]["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert int(notes["prometheus.io/port"]) == settings.worker.port
    assert notes["prometheus.io/path"] == METRICS_PATH and METRICS_PATH in worker_paths()
    # An annotation-driven scrape sends no token: /metrics must stay open (metrics_token unset).
    assert settings.worker.metrics_token is None
    assert guard_lets_through(METRICS_PATH, settings.worker.metrics_token) == 200


def test_worker_advertises_its_pod_address(monkeypatch: pytest.MonkeyPatch) -> None:
    container = worker_container()
    by_name = {e["name"]: e for e in container["env"]}
    assert by_name["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert "$(POD_IP)" in by_name["MOBIEYE_WORKER__ADVERTISE_URL"]["value"]
    settings = settings_of(container, monkeypatch)
    pod_ip = DOWNWARD["status.podIP"]
    assert advertised_url(settings) == f"http://{pod_ip}:{settings.worker.port}"
    assert settings.worker.id == DOWNWARD["metadata.name"], "the pod name is the worker id"
    # The dashboard calls that URL: its allowlist must let it.
    dashboard = settings_of(the_container(obj(*DASHBOARD)), monkeypatch)
    allowlist = UrlAllowlist.from_config(dashboard.fleet)
    assert allowlist.why_not(advertised_url(settings)) is None


def test_grace_period_covers_the_drain(monkeypatch: pytest.MonkeyPatch) -> None:
    workload = obj(*WORKER)
    container = worker_container()
    names = {e["name"] for e in container["env"]}
    assert "MOBIEYE_WORKER__DRAIN_TIMEOUT_S" in names, "set the drain's time explicitly"
    w = settings_of(container, monkeypatch).worker
    grace = pod_spec(workload)["terminationGracePeriodSeconds"]
    assert w.drain_timeout_s > 0, "a worker that drains for 0 s breaks every stream it has"
    assert grace > w.drain_timeout_s + w.shutdown_timeout_s + MARGIN_S, (
        f"terminationGracePeriodSeconds {grace} must exceed drain {w.drain_timeout_s} s + "
        f"shutdown {w.shutdown_timeout_s} s + {MARGIN_S} s, or the kubelet kills the drain"
    )
    # Nothing spends the grace period before SIGTERM reaches the worker.
    assert "preStop" not in (container.get("lifecycle") or {})
    assert WorkerConfig().shutdown_timeout_s > 0


def test_worker_resources_match_its_admission() -> None:
    resources = worker_container()["resources"]
    requests, limits = resources["requests"], resources["limits"]
    # The worker counts the cores of its CPU limit (cgroup cpu.max) when it sizes admission;
    # a lower request would let the node overcommit them.
    assert quantity(requests["cpu"]) == quantity(limits["cpu"]) >= 1
    assert quantity(requests["memory"]) == quantity(limits["memory"])
    assert quantity(limits["memory"]) >= 2**30


def test_worker_needs_no_service_and_rolls_without_a_gap() -> None:
    workload = obj(*WORKER)
    for d in base_objects():
        if d["kind"] == "Service":
            assert not selects(d["spec"].get("selector") or {}, workload), (
                f"Service {d['metadata']['name']} selects the workers: edges pick them over MQTT"
            )
    assert "replicas" not in workload["spec"], "the HorizontalPodAutoscaler owns replicas"
    rolling = workload["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0 and quantity(rolling["maxSurge"]) >= 1


# --- scaling ---------------------------------------------------------------------------------


def test_hpa_scales_the_workers_on_a_real_metric() -> None:
    hpa = obj("HorizontalPodAutoscaler", "mobieye-worker")
    assert hpa["apiVersion"] == "autoscaling/v2"
    workload = obj(*WORKER)
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        workload["apiVersion"], workload["kind"], workload["metadata"]["name"]
    )  # fmt: skip
    names = registry_names()
    metrics = hpa["spec"]["metrics"]
    assert [m["type"] for m in metrics] == ["Pods"]
    pods = metrics[0]["pods"]
    assert pods["metric"]["name"] == "mobieye_worker_occupancy"
    assert pods["metric"]["name"] in names, "the worker exports no such metric"
    assert pods["target"]["type"] == "AverageValue"
    assert 0 < quantity(pods["target"]["averageValue"]) < 1, "occupancy 1 is the SLA capacity"
    # Some rule of the adapter serves exactly that name.
    served = {
        exposed_name(rule, series)
        for rule in adapter_rules()
        for series in re.findall(r"\bmobieye_[a-z0-9_]+", rule["seriesQuery"])
    }
    assert pods["metric"]["name"] in served, "prometheus-adapter serves no such metric"

    pdb = obj("PodDisruptionBudget", "mobieye-worker")
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["maxUnavailable"], (
        "a voluntary disruption must leave a worker to move the streams to"
    )
    assert hpa["spec"]["maxReplicas"] >= hpa["spec"]["minReplicas"]
    # Each scale-down drains a worker: slowly, and one drain at a time.
    down = hpa["spec"]["behavior"]["scaleDown"]
    grace = pod_spec(workload)["terminationGracePeriodSeconds"]
    assert down["stabilizationWindowSeconds"] >= 300
    assert down["policies"], "an explicit, slow scale-down policy"
    for policy in down["policies"]:
        assert policy["type"] == "Pods" and policy["value"] == 1, "one worker at a time"
        assert policy["periodSeconds"] > grace, "the next drain only after the last one ended"
    assert down.get("selectPolicy", "Max") != "Disabled"


def test_pdb_covers_the_workers_only() -> None:
    pdb = obj("PodDisruptionBudget", "mobieye-worker")
    assert pdb["spec"]["maxUnavailable"] == 1
    selector = pdb["spec"]["selector"]["matchLabels"]
    chosen = [w["metadata"]["name"] for w in workloads() if selects(selector, w)]
    assert chosen == ["mobieye-worker"]


def test_adapter_rules_name_the_workers_metrics() -> None:
    names = registry_names()
    for rule in adapter_rules():
        assert {"seriesQuery", "resources", "name", "metricsQuery"} <= set(rule)
        used = set(re.findall(r"\bmobieye_[a-z0-9_]+", rule["seriesQuery"] + rule["metricsQuery"]))
        assert used, "a rule for the workers' metrics"
        assert used <= names, f"{sorted(used - names)}: not exported by cloud_worker/metrics.py"
        for series in re.findall(r"\bmobieye_[a-z0-9_]+", rule["seriesQuery"]):
            assert exposed_name(rule, series), f"the rule's name.matches drops {series}"
        # Per pod: the labels the annotation-based scrape job adds, mapped to their resources.
        overrides = rule["resources"]["overrides"]
        assert overrides["namespace"] == {"resource": "namespace"}
        assert overrides["pod"] == {"resource": "pod"}
        assert 'namespace!=""' in rule["seriesQuery"] and 'pod!=""' in rule["seriesQuery"]
        for part in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert part in rule["metricsQuery"], f"metricsQuery without {part}"


# --- the dashboard ---------------------------------------------------------------------------


def test_dashboard_serves_its_probes_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    workload = obj(*DASHBOARD)
    container = the_container(workload)
    args = parse_cli([str(a) for a in container["args"]])
    assert not is_loopback_host(args.dashboard_host), "the Service and probes can't reach loopback"
    assert [p["containerPort"] for p in container["ports"]] == [args.port]
    settings = settings_of(container, monkeypatch)
    app = create_dashboard_app(settings.mqtt, "the-dashboard-token", fleet_cfg=settings.fleet)
    client = TestClient(app)  # no lifespan: no broker needed
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in dashboard_auth.OPEN_PATHS, f"{get['path']} wants the token"
        assert client.get(get["path"]).status_code == 200, f"the dashboard serves no {get['path']}"
        assert port_number(container, get["port"]) == args.port
    assert client.get("/api/workers").status_code == 401, "the token check itself"
    service = obj("Service", "mobieye-dashboard")
    assert selects(service["spec"]["selector"], workload)
    for port in service["spec"]["ports"]:
        assert port_number(container, port["targetPort"]) == args.port


def test_dashboard_logs_in_as_the_dashboard_role(monkeypatch: pytest.MonkeyPatch) -> None:
    container = the_container(obj(*DASHBOARD))
    env = container_env(container)
    refs = secret_refs(container)
    acl_users = set(re.findall(r"^user (\S+)$", MOSQUITTO_ACL.read_text(), re.MULTILINE))
    assert env["MOBIEYE_MQTT__USERNAME"] == "dashboard" in acl_users
    assert 'add dashboard "$MQTT_DASHBOARD_PASSWORD"' in MOSQUITTO_PASSWD_SH.read_text()
    broker = secret_refs(the_container(obj(*BROKER)))
    assert refs["MOBIEYE_MQTT__PASSWORD"][:2] == broker["MQTT_DASHBOARD_PASSWORD"][:2]
    assert not refs["MOBIEYE_MQTT__PASSWORD"][2], "the dashboard can't run without its account"
    for var in ("MOBIEYE_MQTT__PASSWORD", dashboard_auth.TOKEN_ENV, "MOBIEYE_WORKER_TOKEN"):
        assert var in refs and var not in env, f"{var} belongs in a Secret"
    worker_refs = secret_refs(worker_container())
    assert refs["MOBIEYE_WORKER_TOKEN"] == worker_refs["MOBIEYE_WORKER_TOKEN"]
    # Both find the broker at the mosquitto Service, on the port mosquitto.conf listens on.
    service = obj("Service", "mosquitto")
    broker_container = the_container(obj(*BROKER))
    listens = int(conf_value("listener"))
    to_broker = {
        p["port"]: port_number(broker_container, p["targetPort"]) for p in service["spec"]["ports"]
    }
    for c in (container, worker_container()):
        url = urlsplit(settings_of(c, monkeypatch).mqtt.broker or "")
        assert url.hostname == service["metadata"]["name"]
        assert to_broker.get(url.port) == listens, f"{c['name']}: {url.geturl()} reaches no broker"
    assert MqttConfig().prefix == "mobieye", "docker/mosquitto.acl is written for this prefix"


# --- TURN ------------------------------------------------------------------------------------


def turn_flags() -> dict[str, str | None]:
    return flags([str(a) for a in the_container(obj(*TURN))["args"]])


def test_coturn_args_survive_the_images_entrypoint() -> None:
    """coturn/coturn's docker-entrypoint.sh runs each argument through bash's
    ``eval "echo $ARG"``: shell characters would be interpreted, and an argument that is an
    option of echo (-n, -e, -E) comes out empty, which turnserver refuses."""
    container = the_container(obj(*TURN))
    assert "command" not in container, "keep the image's entrypoint"
    for arg in container["args"]:
        text = _REF.sub("x", str(arg))  # the kubelet replaces $(VAR) before the entrypoint
        assert not re.fullmatch(r"-[neE]+", text), f"{arg!r}: bash's echo takes it as its option"
        assert re.fullmatch(r"[A-Za-z0-9=._:/,+-]+", text), f"{arg!r}: shell characters"


def test_coturn_authenticates_with_the_shared_secret() -> None:
    container = the_container(obj(*TURN))
    f = turn_flags()
    assert "use-auth-secret" in f, "coturn's REST scheme: credentials minted from the secret"
    secret_var = references(f.get("static-auth-secret") or "")
    assert len(secret_var) == 1, "--static-auth-secret=$(VAR), the value from the Secret"
    refs = secret_refs(container)
    (var,) = secret_var
    assert var in refs and var not in container_env(container)
    for forbidden in ("no-auth", "lt-cred-mech", "user", "userdb", "cli-password"):
        assert forbidden not in f, f"--{forbidden}: no static or anonymous access"
    assert "no-cli" in f and "fingerprint" in f and f.get("realm")
    assert "no-tcp-relay" in f, "no TCP relays into the cluster"
    # The workers and the dashboard mint credentials from that same secret.
    for c in (worker_container(), the_container(obj(*DASHBOARD))):
        assert secret_refs(c)["MOBIEYE_WEBRTC__TURN__SECRET"] == refs[var]
        assert "MOBIEYE_WEBRTC__TURN__SECRET" not in container_env(c)


def test_coturn_ports_match_its_service_and_the_turn_urls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiortc.rtcicetransport import parse_stun_turn_uri  # what mobieye.webrtc.turn parses with

    workload = obj(*TURN)
    container = the_container(workload)
    f = turn_flags()
    listening = int(f.get("listening-port") or 3478)
    by_protocol = {p["protocol"]: p["containerPort"] for p in container["ports"]}
    assert by_protocol == {"UDP": listening, "TCP": listening}
    # A bounded relay range, clear of the listening port, in the dynamic range.
    low, high = int(f["min-port"] or 0), int(f["max-port"] or 0)
    assert 49152 <= low < high <= 65535 and high - low < 1024
    assert not low <= listening <= high
    service = obj("Service", "mobieye-turn")
    assert selects(service["spec"]["selector"], workload)
    served = set()
    for port in service["spec"]["ports"]:
        protocol = port.get("protocol", "TCP")
        assert port_number(container, port["targetPort"], protocol) == listening
        served.add((port["port"], protocol.lower()))
    # Every TURN URL the workers and the dashboard hand out is this Service, on a port and
    # transport it serves; udp (WebRTC's own) and tcp (through firewalls) both.
    for c in (worker_container(), the_container(obj(*DASHBOARD))):
        turn = settings_of(c, monkeypatch).webrtc.turn
        assert turn.urls, f"{c['name']}: no TURN URLs"
        transports = set()
        for url in turn.urls:
            parsed = parse_stun_turn_uri(url)
            assert parsed["scheme"] == "turn" and parsed["host"] == service["metadata"]["name"]
            transport = parsed["transport"] or "udp"
            assert (parsed["port"], transport) in served, f"{url}: not served by the Service"
            transports.add(transport)
        assert transports == {"udp", "tcp"}


def test_coturn_runs_unprivileged() -> None:
    spec = pod_spec(obj(*TURN))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0


# --- Secrets and volumes: documented, made by the docs -------------------------------------------


def documented(section: str) -> dict[str, set[str]]:
    """The "name: keys" (or "name") lines of a section of kustomization.yaml's header."""
    header = (BASE / "kustomization.yaml").read_text().split("\napiVersion:")[0]
    lines = header.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"# {section}"))
    out: dict[str, set[str]] = {}
    for line in lines[start + 1 :]:
        m = re.match(r"^#   ([a-z0-9-]+)(?::\s*(.*))?$", line)
        if not m:
            break
        out[m.group(1)] = {k.strip() for k in (m.group(2) or "").split(",") if k.strip()}
    return out


def test_secrets_and_claims_are_documented() -> None:
    used: dict[str, set[str]] = {}
    required: set[str] = set()
    claims = set()
    for workload in workloads():
        for c in containers(workload):
            for secret, key, optional in secret_refs(c).values():
                used.setdefault(secret, set()).add(key)
                if not optional:
                    required.add(secret)
        for volume in pod_spec(workload).get("volumes") or []:
            if "persistentVolumeClaim" in volume:
                claims.add(volume["persistentVolumeClaim"]["claimName"])
            assert "secret" not in volume, "document a Secret volume here too"
    assert documented("Secrets") == used, "kustomization.yaml's header lists the Secrets"
    assert set(documented("PersistentVolumeClaims")) == claims
    # docs/k8s.md makes every Secret that is required, with every key the manifests read.
    doc = K8S_DOC.read_text()
    for secret in required:
        m = re.search(rf"kubectl create secret generic {secret}\b((?:.*\\\n)*.*)", doc)
        assert m, f"docs/k8s.md does not say how to make the Secret {secret}"
        for key in used[secret]:
            assert f"--from-literal={key}=" in m.group(1), f"docs/k8s.md: {secret} without {key}"
    for secret in set(used) - required:
        assert secret in doc, f"docs/k8s.md does not mention the optional Secret {secret}"


def test_k8s_doc_names_real_files() -> None:
    text = K8S_DOC.read_text()
    assert "kubectl apply -k docker/k8s/base" in text
    paths = set(re.findall(r"(?<![\w/])docker/[\w./-]+", text))
    assert paths
    for path in paths:
        assert (REPO / path.rstrip(".")).exists(), f"docs/k8s.md names {path}, which does not exist"
