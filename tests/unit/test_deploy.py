"""The deployment files agree with each other and with the code (no Docker, no network):
the compose file's services, healthchecks and loopback-only ports, the Dockerfile's stages and
runtime user, the dashboard's and alert rules' metric names against the metrics the code
defines. deploy/check_image.sh does what needs tools (wheel build, hadolint, promtool)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")  # PyYAML comes with uvicorn[standard]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
METRIC_DEFINITION = re.compile(r"\b(?:Counter|Gauge|Histogram|Summary)\(\s*\"(streamrec_[a-z_]+)\"")
SERIES_SUFFIXES = ("_bucket", "_sum", "_count", "_created")


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _defined_metrics() -> set[str]:
    names: set[str] = set()
    for package in ("stream_app", "consumers", "streamrec", "producers"):
        for path in (ROOT / package).rglob("*.py"):
            names.update(METRIC_DEFINITION.findall(path.read_text()))
    return names


def _metrics_in(expr: str, known: set[str]) -> set[str]:
    """Metric names a PromQL expression reads; a ``__name__=~"re"`` matcher must match one."""
    for pattern in re.findall(r'__name__=~"([^"]+)"', expr):
        assert any(re.fullmatch(pattern, name) for name in known), \
            f"{pattern!r} in {expr!r} matches no metric the code defines"
    expr = re.sub(r'__name__=~"[^"]+"', "", expr)
    found = set()
    for name in re.findall(r"\bstreamrec_[a-z_]*[a-z]\b", expr):
        for suffix in SERIES_SUFFIXES:
            if name.endswith(suffix) and name[: -len(suffix)] in known:
                name = name[: -len(suffix)]
        found.add(name)
    return found


def test_metric_names_are_found_in_the_code() -> None:
    defined = _defined_metrics()
    assert {"streamrec_worker_events_total", "streamrec_worker_batch_records",
            "streamrec_lookup_requests_total", "streamrec_lookup_list_delay_seconds"} <= defined


# --------------------------------------------------------------------------- compose file
def test_compose_has_the_services_ops_need() -> None:
    services = _compose()["services"]
    assert {"kafka", "worker", "lookup", "retrain", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:3.9")
    assert services["lookup"]["command"][:3] == ["serve", "--host", "0.0.0.0"]


def test_every_service_has_a_healthcheck() -> None:
    for name, service in _compose()["services"].items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        if check.get("disable"):  # only one-shot jobs, run on demand under a profile
            assert service.get("profiles") and service.get("restart") == "no", name
        else:
            assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_streamrec_healthchecks_use_each_service_url() -> None:
    services = _compose()["services"]
    for name, port in (("worker", 9464), ("lookup", 8000)):
        env = services[name]["environment"]
        assert env["HEALTHCHECK_URL"] == f"http://127.0.0.1:{port}/healthz", name
        assert "HEALTHCHECK_URL" in " ".join(services[name]["healthcheck"]["test"]), name


def test_every_published_port_binds_loopback_only() -> None:
    published = 0
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", (name, port)
            else:
                assert str(port).startswith("127.0.0.1:"), (name, port)
    assert published >= 5  # kafka, worker metrics, lookup, prometheus, grafana


def test_retrain_runs_on_demand_with_the_workers_state() -> None:
    services = _compose()["services"]
    retrain, worker = services["retrain"], services["worker"]
    assert retrain["profiles"] and retrain["command"][0] == "retrain"
    state = [v for v in worker["volumes"] if v.endswith(":/var/lib/streamrec")]
    assert state and state[0] in retrain["volumes"]


def test_the_lookup_token_reaches_the_lookup_and_prometheus() -> None:
    compose = _compose()
    token = compose["services"]["lookup"]["environment"]["STREAMREC_API_TOKEN"]
    assert re.fullmatch(r"\$\{STREAMREC_API_TOKEN:-[^}]+\}", token)
    assert compose["configs"]["lookup-token"]["content"] == token
    mounted = {c["target"] for c in compose["services"]["prometheus"]["configs"]}
    jobs = {j["job_name"]: j for j in yaml.safe_load(
        (DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]}
    assert jobs["streamrec-lookup"]["authorization"]["credentials_file"] in mounted


def test_prometheus_scrapes_the_ports_compose_serves() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    assert targets["streamrec-worker"] == ["worker:9464"]
    assert targets["streamrec-lookup"] == ["lookup:8000"]
    assert config["rule_files"] == ["alerts.yml"]
    mounts = _compose()["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in mounts


def test_grafana_is_provisioned_with_the_dashboard_in_the_repo() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"]
                  if v.startswith("./"))
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/streamrec.yml")
                              .read_text())["providers"][0]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    source = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
                            .read_text())["datasources"][0]
    dashboard = json.loads((DEPLOY / "grafana/dashboards/streamrec.json").read_text())
    uids = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert uids == {source["uid"]} and source["url"] == "http://prometheus:9090"


# ------------------------------------------------------------------------------- Dockerfile
def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def _stages() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The build stage's and the runtime stage's steps, each from its FROM on."""
    steps = _dockerfile()
    starts = [i for i, (ins, _) in enumerate(steps) if ins == "FROM"]
    assert len(starts) == 2, "two stages: build, runtime"
    return steps[starts[0]:starts[1]], steps[starts[1]:]


def test_dockerfile_builds_wheels_then_runs_slim_as_non_root() -> None:
    steps = _dockerfile()
    build, runtime = _stages()
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\} AS build", build[0][1])
    assert runtime[0][1].startswith("python:${PYTHON_VERSION}-slim")
    assert ("ARG", "PYTHON_VERSION=3.11") in steps
    assert any(ins == "RUN" and args.startswith("pip wheel") for ins, args in build)
    runs = " ".join(args for ins, args in runtime if ins == "RUN")
    assert "libgomp1" in runs and "--no-index" in runs and "from=build" in runs
    users = [args for ins, args in runtime if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "8000" in dict(steps)["EXPOSE"].split() and "9464" in dict(steps)["EXPOSE"].split()
    health = dict(steps)["HEALTHCHECK"]
    assert "HEALTHCHECK_URL" in health and "urllib.request" in health


NOT_IN_IMAGE = {"streamrec_eval"}
"""Packages the image leaves out on purpose: evaluation runs beside the runtime (``streamrec
evaluate``, ``streamrec guard report``, the benches), never in the worker, lookup or retrain
the image runs."""


def test_dockerfile_copies_every_runtime_package_the_wheel_contains() -> None:
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    build, _ = _stages()
    copied = {Path(src).name for ins, args in build if ins == "COPY"
              for src in args.split()[:-1]}
    assert {pattern.rstrip("*") for pattern in include} - NOT_IN_IMAGE <= copied
    assert {"pyproject.toml", "README.md"} <= copied


# ----------------------------------------------------------------- dashboard and alert rules
def test_dashboard_queries_read_only_metrics_the_code_defines() -> None:
    known = _defined_metrics()
    dashboard = json.loads((DEPLOY / "grafana/dashboards/streamrec.json").read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used |= _metrics_in(target["expr"], known)
    assert used <= known, f"not defined anywhere: {sorted(used - known)}"
    # what issue #20 asks the dashboard to show
    assert {"streamrec_worker_events_total", "streamrec_worker_consumer_lag",
            "streamrec_lookup_consumer_lag", "streamrec_worker_event_to_list_seconds",
            "streamrec_lookup_list_delay_seconds", "streamrec_worker_batch_records",
            "streamrec_worker_lists_pending", "streamrec_worker_quarantined_total",
            "streamrec_lookup_requests_total", "streamrec_lookup_request_seconds",
            "streamrec_worker_checkpoint_seconds", "streamrec_worker_ready",
            "streamrec_lookup_ready"} <= used
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "streamrec"


def test_alert_rules_parse_and_read_only_defined_metrics() -> None:
    known = _defined_metrics()
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    rules = {r["alert"]: r for g in groups for r in g["rules"]}
    assert {"StreamrecWorkerDown", "StreamrecConsumerLagGrowing", "StreamrecListFreshnessSlow",
            "StreamrecQuarantineSpike"} <= set(rules)
    for name, rule in rules.items():
        used = _metrics_in(rule["expr"], known)
        assert used <= known, f"{name}: not defined anywhere: {sorted(used - known)}"
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    assert "streamrec_worker_ready" in rules["StreamrecWorkerDown"]["expr"]
    assert "[10m:1m]" in rules["StreamrecConsumerLagGrowing"]["expr"]
