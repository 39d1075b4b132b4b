"""The deployment files (docker/, deploy/) against the gateway they deploy.

No Docker engine or Kubernetes cluster runs here, so these files cannot be started in
the suite. What can go wrong with them without anyone noticing is checked instead: every
flag a container passes is one `serve --help` lists, every CONDUIT_* variable is a real
setting whose value the settings accept, every probe path is answered by a running
gateway, names agree across files (replica set members, secrets, ports, labels), and the
tools that can check their own configs offline do so (haproxy -c, promtool, kubectl
kustomize, node --check), each skipped with its reason when not installed.

Settings and flags of issue 23 that other branches add (workers, TLS, metrics, tracing)
are named in ``PENDING``: while a name's setting is missing from Settings the check of
that name is skipped (after every other name was checked), never passed; once the setting
exists, the name is checked like any other.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
import yaml

from conduit_tornado.api.routes import routes
from conduit_tornado.core.settings import Settings
from conduit_tornado.server.forwarded import TrustedProxies
from conduit_tornado.store.mongo import INDEX_BUILD_SECONDS

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"

# Issue 23's agreed names owned by other branches: setting -> the branch that adds it.
PENDING = {
    "workers": "workers",
    "tls_cert": "workers",
    "tls_key": "workers",
    "metrics_token": "metrics",
    "metrics_port": "metrics",
    "otel_endpoint": "tracing",
    "otel_service_name": "tracing",
    "otel_capture_content": "tracing",
    "log_format": "tracing",
    "access_log": "tracing",
}
# Flags of `serve` and the setting each stands for.
FLAG_SETTING = {"--workers": "workers", "--tls-cert": "tls_cert", "--tls-key": "tls_key"}
# Standard OpenTelemetry SDK variables the files may set (the tracing branch reads them).
OTEL_VARIABLES = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME"}
SETTINGS = set(Settings.model_fields)
PIP_WHEEL = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _yaml_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


@pytest.fixture(scope="module")
def serve_help() -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "jupyter_ext"), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "conduit_tornado", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,  # `-m` looks in the working directory first: this tree's CLI, not another's
    )
    return done.stdout


class Names:
    """Collects which names are pending (their branch not merged here) while asserting
    every other name is real."""

    def __init__(self) -> None:
        self.pending: set[str] = set()

    def setting(self, variable: str, where: str) -> None:
        assert variable.startswith("CONDUIT_"), (variable, where)
        name = variable.removeprefix("CONDUIT_").lower()
        if name in SETTINGS:
            return
        assert name in PENDING, f"{where}: {variable} is not a setting of the gateway"
        self.pending.add(f"{variable} ({PENDING[name]} branch)")

    def variable(self, variable: str, where: str) -> None:
        if variable.startswith("CONDUIT_"):
            self.setting(variable, where)
        else:
            assert variable in OTEL_VARIABLES, f"{where}: unexpected variable {variable}"

    def command(self, args: list[str], help_text: str, where: str) -> None:
        """``args`` as given to the conduit-tornado CLI: `serve` and real flags only."""
        assert args[0] == "serve", (where, args)
        listed = set(re.findall(r"(--[a-z][a-z-]*)", help_text))
        for flag in (a.split("=", 1)[0] for a in args[1:] if a.startswith("-")):
            if flag in listed:
                continue
            setting = FLAG_SETTING.get(flag)
            assert setting is not None and setting not in SETTINGS, (
                f"{where}: `serve` has no flag {flag}"
            )
            self.pending.add(f"serve {flag} ({PENDING[setting]} branch)")

    def settle(self) -> None:
        if self.pending:
            pytest.skip("names not in this tree yet: " + ", ".join(sorted(self.pending)))


def _stop_bound(shutdown: float) -> float:
    """Seconds from SIGTERM until a gateway has surely exited: its drain, then flushing
    (bounded by the workers supervisor's own grace where that module exists here)."""
    try:
        from conduit_tornado.server.workers import STOP_GRACE_SECONDS  # type: ignore
    except ImportError:  # the workers branch is not merged here: the flush's own bound
        return shutdown + Settings().mongodb_timeout + 5
    return shutdown + float(STOP_GRACE_SECONDS)


def _route_exists(path: str) -> bool:
    return any(re.fullmatch(pattern, path) for pattern, _ in routes())


# -- docker/compose.yaml -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = _yaml(DOCKER / "compose.yaml")
    return data


def _gateways(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("build", {}).get("dockerfile") == "docker/Dockerfile"
    }


def _mongos(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if "--replSet" in (svc.get("command") or [])
    }


def test_compose_runs_the_topology_the_issue_names(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gateways = _gateways(compose)
    assert len(gateways) == 2
    assert len(_mongos(compose)) == 3  # a replica set that survives losing one member
    images = {name: svc.get("image", "") for name, svc in services.items()}
    assert images["lb"].startswith("haproxy:")
    assert images["prometheus"].startswith("prom/prometheus:")
    assert images["otel-collector"].startswith("otel/opentelemetry-collector")
    assert "grafana" in services["grafana"]["profiles"]  # optional
    for svc in services.values():  # reproducible: every image pinned to a version
        image = svc.get("image")
        if image and not image.endswith(":local"):
            assert re.search(r":v?\d", image), image


def test_compose_gateway_commands_and_settings_are_real(
    compose: dict[str, Any], serve_help: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = Names()
    for name, svc in _gateways(compose).items():
        names.command(svc["command"], serve_help, f"compose {name}")
        assert "--workers" in svc["command"]
        assert svc["command"][svc["command"].index("--workers") + 1] == "2"
        env: dict[str, str] = svc["environment"]
        for variable in env:
            names.variable(variable, f"compose {name}")
        # Secret files become CONDUIT_<NAME> (docker/entrypoint.sh).
        for secret in svc["secrets"]:
            assert secret.startswith("conduit_"), secret
            names.setting(secret.upper(), f"compose {name} secrets")
        # The values are ones the gateway accepts (${...} stand for the operator's own).
        for variable, value in env.items():
            if variable.startswith("CONDUIT_") and "${" not in str(value):
                monkeypatch.setenv(variable, str(value))
        settings = Settings()
        assert settings.store == "mongodb"
        assert settings.mongodb_uri is not None
        TrustedProxies(settings.forwarded_allow_ips)  # raises on a malformed entry
        # SIGTERM drains: compose must wait longer than the gateway's own bound.
        grace = float(svc["stop_grace_period"].removesuffix("s"))
        assert grace > _stop_bound(settings.shutdown_timeout)
    names.settle()


def test_compose_replica_set_agrees_everywhere(compose: dict[str, Any]) -> None:
    mongos = _mongos(compose)
    set_names = {svc["command"][svc["command"].index("--replSet") + 1] for svc in mongos.values()}
    assert len(set_names) == 1
    (rs_name,) = set_names
    init = (DOCKER / "mongo-init.js").read_text(encoding="utf-8")
    assert f'_id: "{rs_name}"' in init
    members = set(re.findall(r'host: "([^"]+)"', init))
    assert members == {f"{name}:27017" for name in mongos}
    for name, svc in _gateways(compose).items():
        uri = urlsplit(svc["environment"]["CONDUIT_MONGODB_URI"])
        assert set(uri.netloc.split(",")) == members, name
        query = parse_qs(uri.query)
        assert query["replicaSet"] == [rs_name]
        assert query["w"] == ["majority"]
        # Exact limits read what was written: never a secondary.
        assert query.get("readPreference", ["primary"]) == ["primary"]
        assert svc["depends_on"]["mongo-init"]["condition"] == "service_completed_successfully"
    init_svc = compose["services"]["mongo-init"]
    assert set(init_svc["depends_on"]) == set(mongos)
    assert "/docker/mongo-init.js" in init_svc["command"]
    assert any(v.startswith("./mongo-init.js:/docker/mongo-init.js") for v in init_svc["volumes"])


def test_mongo_init_script_parses() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: mongo-init.js (mongosh JavaScript) not parsed")
    subprocess.run([node, "--check", str(DOCKER / "mongo-init.js")], check=True)


def test_compose_networks_keep_mongodb_private(compose: dict[str, Any]) -> None:
    assert compose["networks"]["data"]["internal"] is True
    for name, svc in _mongos(compose).items():
        assert svc["networks"] == ["data"], name
        assert "ports" not in svc, name
    for name in _gateways(compose):
        assert "ports" not in compose["services"][name], name  # only through the lb
    for svc in compose["services"].values():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), port


def test_only_the_load_balancer_is_trusted_for_forwarded_headers(
    compose: dict[str, Any],
) -> None:
    lb = compose["services"]["lb"]
    address = lb["networks"]["front"]["ipv4_address"]
    subnet = ipaddress.ip_network(compose["networks"]["front"]["ipam"]["config"][0]["subnet"])
    assert ipaddress.ip_address(address) in subnet
    for svc in _gateways(compose).values():
        proxies = TrustedProxies(svc["environment"]["CONDUIT_FORWARDED_ALLOW_IPS"])
        assert proxies.trusts(address)
        others = [str(h) for h in subnet.hosts() if str(h) != address][:20]
        assert not any(proxies.trusts(h) for h in others)  # a gateway or Prometheus is not


def test_haproxy_balances_the_gateways_with_a_readiness_check(compose: dict[str, Any]) -> None:
    config = (DOCKER / "haproxy.cfg").read_text(encoding="utf-8")
    servers = dict(re.findall(r"^\s*server (\S+) (\S+)", config, re.MULTILINE))
    port = Settings().port  # the image sets CONDUIT_PORT to this default
    assert "CONDUIT_PORT=5000" in (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    assert servers == {name: f"{name}:{port}" for name in _gateways(compose)}
    check = re.search(r"option httpchk GET (\S+)", config)
    assert check is not None and check.group(1) == "/health/ready"
    assert _route_exists(check.group(1))
    assert "option forwardfor" in config
    assert (
        "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"
        in compose["services"]["lb"]["volumes"]
    )


def test_haproxy_accepts_its_config() -> None:
    haproxy = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if haproxy is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy): config not checked")
    done = subprocess.run(
        [haproxy, "-c", "-f", str(DOCKER / "haproxy.cfg")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr + done.stdout
    # Outside compose the gateways' names do not resolve (they are looked up at run time);
    # any other warning is a real one.
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert all("could not resolve address" in line for line in warnings), warnings


def test_prometheus_scrapes_both_instances_with_the_token(compose: dict[str, Any]) -> None:
    config = _yaml(DOCKER / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "conduit-tornado"]
    assert job["metrics_path"] == "/metrics"
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    assert targets == {f"{name}:{Settings().port}" for name in _gateways(compose)}
    auth = job["authorization"]
    assert auth["type"] == "Bearer"
    secret = Path(auth["credentials_file"])
    assert secret.parent == Path("/run/secrets")
    assert secret.name in compose["services"]["prometheus"]["secrets"]
    # The gateways read the same file as CONDUIT_METRICS_TOKEN.
    assert secret.name == "conduit_metrics_token"
    for svc in _gateways(compose).values():
        assert secret.name in svc["secrets"]
    assert (
        "./prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in compose["services"]["prometheus"]["volumes"]
    )


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus): not checked")
    # --syntax-only: the token file exists inside the container, not here.
    subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(DOCKER / "prometheus.yml")],
        check=True,
        capture_output=True,
    )


def test_otel_collector_receives_what_the_gateways_send(compose: dict[str, Any]) -> None:
    config = _yaml(DOCKER / "otel-collector.yaml")
    http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    host, _, port = http.rpartition(":")
    assert host == "0.0.0.0"  # noqa: S104 (the collector listens on its container network)
    for svc in _gateways(compose).values():
        endpoint = urlsplit(svc["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert endpoint.scheme == "http" and endpoint.port == int(port)
        assert endpoint.hostname in compose["services"]  # the collector's service name
        assert compose["services"][endpoint.hostname]["image"].startswith(
            "otel/opentelemetry-collector"
        )
    for kind, pipeline in config["service"]["pipelines"].items():
        assert kind == "traces"
        for section in ("receivers", "processors", "exporters"):
            assert set(pipeline[section]) <= set(config[section]), section


def test_grafana_is_provisioned_with_the_dashboard(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    provider = _yaml(DOCKER / "grafana/provisioning/dashboards/conduit.yaml")["providers"][0]
    dashboard = mounts["../docs/grafana-dashboard.json"]
    assert Path(dashboard).parent == Path(provider["options"]["path"])
    (source,) = _yaml(DOCKER / "grafana/provisioning/datasources/prometheus.yaml")["datasources"]
    assert urlsplit(source["url"]).hostname == "prometheus"
    assert (DOCKER / "grafana/provisioning").is_dir()
    if not (ROOT / "docs/grafana-dashboard.json").exists():
        pytest.skip("docs/grafana-dashboard.json comes from the metrics branch")


def test_compose_secrets_are_made_locally_and_never_committed(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    files = {name: Path(spec["file"]) for name, spec in compose["secrets"].items()}
    assert all(path.parent == Path("./secrets") for path in files.values())
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "docker/secrets/conduit_master_key"], cwd=ROOT
    )
    assert ignored.returncode == 0, "docker/secrets/ must be git-ignored"
    tracked = subprocess.run(
        ["git", "ls-files", "docker/secrets"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    assert tracked in ([], ["docker/secrets/.gitignore"])
    # make-secrets.sh writes exactly the files compose names, random, readable by the
    # containers' users, in a directory private to the operator; a second run keeps them.
    target = tmp_path / "secrets"
    subprocess.run(["sh", str(DOCKER / "make-secrets.sh"), str(target)], check=True)
    assert {p.name for p in target.iterdir()} == {p.name for p in files.values()}
    values = {p.name: p.read_text() for p in target.iterdir()}
    assert len(set(values.values())) == len(values)
    assert all(len(v) >= 40 for v in values.values())
    assert values["conduit_master_key"].startswith("condt_master_")
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in target.iterdir())
    subprocess.run(["sh", str(DOCKER / "make-secrets.sh"), str(target)], check=True)
    assert {p.name: p.read_text() for p in target.iterdir()} == values


def test_entrypoint_turns_secret_files_into_settings(tmp_path: Path) -> None:
    (tmp_path / "conduit_master_key").write_text("condt_master_abc\n")
    (tmp_path / "conduit_secret_key").write_text("from-file")
    (tmp_path / "conduit_bad-name").write_text("x")  # not a variable name: skipped
    (tmp_path / "other").write_text("x")
    env = {
        "PATH": os.environ["PATH"],
        "SECRETS_DIR": str(tmp_path),
        "CONDUIT_SECRET_KEY": "explicit",  # an explicit variable wins over the file
    }
    done = subprocess.run(
        ["sh", str(DOCKER / "entrypoint.sh"), "env"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    seen = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert seen["CONDUIT_MASTER_KEY"] == "condt_master_abc"
    assert seen["CONDUIT_SECRET_KEY"] == "explicit"
    assert not any(k.startswith("CONDUIT_BAD") or k == "OTHER" for k in seen)


# -- docker/Dockerfile ---------------------------------------------------------------------


def test_dockerfile_installs_the_package_and_runs_the_cli() -> None:
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    final = text.split("\nFROM ")[-1]
    assert "node" not in final.lower()  # nothing of Node.js at run time
    assert 'ENTRYPOINT ["conduit-entrypoint", "conduit-tornado"]' in final
    assert "COPY docker/entrypoint.sh /usr/local/bin/conduit-entrypoint" in final
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'conduit-tornado = "conduit_tornado.cli:main"' in pyproject
    assert os.access(DOCKER / "entrypoint.sh", os.X_OK)  # COPY keeps the mode
    check = re.search(r"HEALTHCHECK .*http://127\.0\.0\.1:(\d+)(/[a-z/]+)", text)
    assert check is not None
    assert int(check.group(1)) == 5000 and _route_exists(check.group(2))
    assert "EXPOSE 5000" in final
    for source in re.findall(r"^COPY (?!--from)(\S+(?: \S+)*) \S+$", text, re.MULTILINE):
        for path in source.split():
            assert (ROOT / path).exists(), path


def test_the_image_installs_the_run_time_extras() -> None:
    """Tracing's OpenTelemetry packages are an extra: the image must ask for it, or the
    compose file's OTLP endpoint would only log that tracing is unavailable."""
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    spec = re.search(r'pip wheel .*"\.\[([a-z,]+)\]"', text)
    assert spec is not None
    extras = set(spec.group(1).split(","))
    assert "otel" in extras
    assert not extras & {"test", "dev", "jupyter"}  # nothing for tests or notebooks
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    missing = extras - set(declared["project"]["optional-dependencies"])
    if missing:
        pytest.skip(f"extras {sorted(missing)} come from another branch (otel: tracing)")


def test_the_dockerfiles_build_context_makes_a_complete_wheel(tmp_path: Path) -> None:
    """The build stage copies only some paths: a wheel built from just those carries the
    web UI's files and the price tables (package data a missed COPY would drop)."""
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)
    assert len(stages) == 3  # comments, the build stage, the final stage
    build = stages[1]
    src = tmp_path / "src"
    src.mkdir()
    for line in re.findall(r"^COPY (?!--from)(.+)$", build, re.MULTILINE):
        *sources, dest = line.split()
        for source in sources:
            origin = ROOT / source
            into_dir = dest.endswith("/") or dest == "."
            target = src / dest / origin.name if into_dir else src / dest
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [*PIP_WHEEL, "-w", str(wheels), str(src)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    names = zipfile.ZipFile(next(wheels.glob("conduit_tornado-*.whl"))).namelist()
    assert "conduit_tornado/data/prices.json" in names
    assert "conduit_tornado/cli.py" in names
    static = [n for n in names if n.startswith("conduit_tornado/ui/static/")]
    in_tree = [p for p in (ROOT / "conduit_tornado/ui/static").rglob("*") if p.is_file()]
    assert len(static) == len(in_tree) > 0


# -- the probe and scrape paths, on a running gateway -------------------------------------


@pytest.mark.asyncio
async def test_probe_and_scrape_paths_answer_on_a_gateway(start_gateway: Any) -> None:
    """Every path a probe, the load balancer or Prometheus uses, asked of a gateway."""
    token = "scrape-token-for-the-test"
    overrides = {"metrics_token": token} if "metrics_token" in SETTINGS else {}
    gw = await start_gateway(**overrides)
    async with httpx2.AsyncClient(base_url=gw.url) as http:
        for path in ("/health/live", "/health/ready"):
            answer = await http.get(path)
            assert answer.status_code == 200, path
            assert answer.json()["status"] == "ok"
        if "metrics_token" not in SETTINGS:
            pytest.skip("/metrics and CONDUIT_METRICS_TOKEN come from the metrics branch")
        refused = await http.get("/metrics")
        assert refused.status_code in (401, 403)
        scraped = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert scraped.status_code == 200
        assert "conduit_" in scraped.text


# -- deploy/ (Kubernetes) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    """Every manifest of deploy/base and deploy/monitoring by kind."""
    found: dict[str, dict[str, Any]] = {}
    for path in [*BASE.glob("*.yaml"), *(DEPLOY / "monitoring").glob("*.yaml")]:
        if path.name == "kustomization.yaml":
            continue
        for doc in _yaml_all(path):
            assert doc["kind"] not in found, doc["kind"]
            found[doc["kind"]] = doc
    return found


def _container(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = k8s["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def test_kustomizations_list_every_manifest() -> None:
    for folder in (BASE, DEPLOY / "monitoring"):
        kustomization = _yaml(folder / "kustomization.yaml")
        listed = {r for r in kustomization["resources"] if r.endswith(".yaml")}
        present = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
        assert listed == present, folder
    assert "../base" in _yaml(DEPLOY / "monitoring/kustomization.yaml")["resources"]


def test_kustomize_builds_both() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: kustomize builds not checked")
    for folder, kinds in (
        (BASE, {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"}),
        (DEPLOY / "monitoring", {"ServiceMonitor", "PodDisruptionBudget"}),
    ):
        done = subprocess.run(
            [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=True
        )
        built = list(yaml.safe_load_all(done.stdout))
        assert kinds <= {d["kind"] for d in built}
        assert all(d["metadata"]["namespace"] == "conduit" for d in built)


def test_deployment_runs_real_flags_and_settings(
    k8s: dict[str, dict[str, Any]], serve_help: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = Names()
    container = _container(k8s)
    names.command(container["args"], serve_help, "deployment")
    config = k8s["ConfigMap"]
    refs = {
        ref.get("configMapRef", ref.get("secretRef", {}))["name"] for ref in container["envFrom"]
    }
    secret = _yaml(DEPLOY / "secret.example.yaml")
    assert refs == {config["metadata"]["name"], secret["metadata"]["name"]}
    for variable in config["data"]:
        names.variable(variable, "configmap")
    for variable in secret["stringData"]:
        names.setting(variable, "secret.example.yaml")
    for item in container["env"]:
        assert item["name"] == "POD_NAME" or item["name"] in OTEL_VARIABLES
    for variable, value in config["data"].items():
        if variable.startswith("CONDUIT_"):
            monkeypatch.setenv(variable, value)
    settings = Settings()
    assert settings.store == "mongodb"  # no silent SQLite on an ephemeral disk
    assert container["ports"][0]["containerPort"] == settings.port
    names.settle()


def test_secret_template_holds_no_real_values() -> None:
    secret = _yaml(DEPLOY / "secret.example.yaml")
    for name, value in secret["stringData"].items():
        assert "REPLACE_ME" in value or "USER:PASSWORD" in value, name
    uri = parse_qs(urlsplit(secret["stringData"]["CONDUIT_MONGODB_URI"]).query)
    assert uri["w"] == ["majority"] and "readPreference" not in uri
    assert "secret.example.yaml" not in _yaml(BASE / "kustomization.yaml")["resources"]


def test_deployment_probes_and_shutdown(k8s: dict[str, dict[str, Any]]) -> None:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    container = _container(k8s)
    port_names = {p["name"] for p in container["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"].startswith("/health/") and _route_exists(get["path"]), probe
        assert get["port"] in port_names
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    # The port opens after start-up's index builds, which may take INDEX_BUILD_SECONDS.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= INDEX_BUILD_SECONDS
    # Grace: the preStop sleep, then SIGTERM's drain (shutdown timeout) and the flush.
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    config = k8s["ConfigMap"]["data"]
    shutdown = float(config["CONDUIT_SHUTDOWN_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] > float(command[1]) + _stop_bound(shutdown)
    strategy = k8s["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_deployment_resources_and_hardening(k8s: dict[str, dict[str, Any]]) -> None:
    container = _container(k8s)
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"] and "cpu" not in resources["limits"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's user
    assert "--uid 10001" in (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts  # writable: multiprocess metrics files, spooled uploads


def test_service_hpa_pdb_and_monitor_point_at_the_pods(k8s: dict[str, dict[str, Any]]) -> None:
    deployment = k8s["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = k8s["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {p["name"] for p in _container(k8s)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    hpa = k8s["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["minReplicas"] >= 2
    pdb = k8s["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["minAvailable"] < hpa["minReplicas"]  # a drain can always proceed
    monitor = k8s["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    credentials = endpoint["authorization"]["credentials"]
    secret = _yaml(DEPLOY / "secret.example.yaml")
    assert credentials["name"] == secret["metadata"]["name"]
    assert credentials["key"] == "CONDUIT_METRICS_TOKEN" in secret["stringData"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == _container(k8s)["ports"][0]["containerPort"]
