"""The monitoring files: Prometheus' alert rules (checked and unit-tested by ``promtool``), its
scrape configuration, and the Grafana dashboard. Every query names only metrics the package
exports, with labels they have, and the compose profile wires them to the right ports and
files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from refund_worker import metrics
from refund_worker.exporter import _families, _State
from tests.conftest import REQUIRE_SERVICES
from tests.ops.deploy_files import ENV, ROOT, interpolate_all, load_compose

PROMETHEUS = ROOT / "deploy/prometheus"
GRAFANA = ROOT / "deploy/grafana"
DASHBOARD = GRAFANA / "dashboards/refund-worker.json"
#: Labels Prometheus adds to every series it scrapes, and the histogram's own.
TARGET_LABELS = {"instance", "job", "le"}
_NAME = re.compile(r"\b(refund_worker_[a-z_]+|up)\b")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)\s*\"")


def exported() -> dict[str, set[str]]:
    """Every sample name the package can export, with its label names."""
    names: dict[str, set[str]] = {"up": {"instance", "job"}}
    # Touch every event metric once, so that each family has its samples.
    metrics.magento_call("order_get", 200, 0.01)
    metrics.refund_attempt("invoice", "succeeded")
    metrics.reconciliation("found")
    metrics.rate_limit_wait(0.1)
    metrics.rate_limit_refused()
    metrics.rate_limit_pause()
    metrics.email("sent")
    metrics.webhook_delivery("delivered")
    families = [f for f in REGISTRY.collect() if f.name.startswith("refund_worker_")]
    state = _State(refunds={("default", "queued", "auto"): 1}, queue_ages={"refunds": 1.0})
    families += list(_families(state))
    for family in families:
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                names.setdefault(sample.name, set()).update(sample.labels)
    return names


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    document = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in document["panels"]
            for target in panel.get("targets", [])]


def check_expr(where: str, expr: str, names: dict[str, set[str]]) -> set[str]:
    used = set(_NAME.findall(expr))
    assert used, f"{where}: names no metric"
    unknown = used - set(names)
    assert not unknown, f"{where}: {sorted(unknown)} are not exported"
    labels = set().union(*(names[name] for name in used)) | TARGET_LABELS
    for group in _GROUPING.findall(expr):
        for label in filter(None, (part.strip() for part in group.split(","))):
            assert label in labels, f"{where}: groups by {label!r}, which no metric here has"
    for label in _MATCHER.findall(expr):
        assert label in labels, f"{where}: matches on {label!r}, which no metric here has"
    return used


def test_every_alert_and_panel_names_exported_metrics_and_labels() -> None:
    names = exported()
    alerted: set[str] = set()
    for rule in alert_rules():
        alerted |= check_expr(f"alert {rule['alert']}", rule["expr"], names)
    shown: set[str] = set()
    for title, expr in dashboard_exprs():
        shown |= check_expr(f"panel {title!r}", expr, names)
    # The four things on-call cares about are both alerted on and on the dashboard.
    four = {
        "refund_worker_refund_attempts_total",  # refunds failing
        "refund_worker_refunds", "refund_worker_refunds_in_doubt",  # in doubt, needs attention
        "refund_worker_queue_oldest_message_age_seconds",  # queue age
        "refund_worker_magento_calls_total",  # Magento's 5xx rate
        "refund_worker_magento_call_duration_seconds_bucket",  # and latency
    }
    assert four <= alerted
    assert four <= shown
    assert "refund_worker_webhook_deliveries_total" in shown  # the hook for the webhook work


def test_the_checker_catches_a_wrong_name_or_label() -> None:
    names = exported()
    with pytest.raises(AssertionError, match="not exported"):
        check_expr("x", "rate(refund_worker_refund_attempt_total[5m])", names)
    with pytest.raises(AssertionError, match="groups by 'tenant'"):
        check_expr("x", "sum by (tenant) (refund_worker_refunds)", names)
    with pytest.raises(AssertionError, match="matches on 'order_id'"):
        check_expr("x", 'refund_worker_refunds{order_id="42"}', names)


def test_no_label_can_carry_an_id_a_key_or_a_tenant() -> None:
    # ``shop``: a name the operator configured (metrics.shop_label folds any other to "other").
    allowed = {"service", "outcome", "operation", "status", "queue", "le", "shop"}
    for name, labels in exported().items():
        if name != "up":
            assert labels <= allowed, f"{name} has labels {labels - allowed}"


def test_the_dashboard_is_provisioned_with_its_data_source() -> None:
    document = json.loads(DASHBOARD.read_text())
    source = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    for panel in document["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/refund-worker.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))
    for panel in document["panels"]:  # Grafana's grid is 24 wide
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


def test_the_monitoring_profile_scrapes_what_the_services_serve() -> None:
    services = interpolate_all(load_compose(), ENV)["services"]
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    prometheus = services["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job in jobs.values():
        assert job["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
        assert job["metrics_path"] == "/metrics"
    assert "metrics_token" in prometheus["secrets"]
    api_port = services["api"]["command"][services["api"]["command"].index("--port") + 1]
    assert jobs["refund-worker-api"]["static_configs"][0]["targets"] == [f"api:{api_port}"]
    worker = services["worker"]["environment"]
    assert jobs["refund-worker-workers"]["dns_sd_configs"][0] == {
        "names": ["worker"], "type": "A", "port": int(worker["REFUND_WORKER_METRICS_PORT"]),
        "refresh_interval": "30s"}
    assert worker["PROMETHEUS_MULTIPROC_DIR"] in services["worker"]["tmpfs"]
    assert worker["REFUND_WORKER_METRICS_HOST"] == "0.0.0.0"  # inside the network, with a token
    assert "ports" not in services["worker"]  # never published on the host
    grafana = services["grafana"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    assert prometheus["ports"] == ["127.0.0.1:9090:9090"]


def promtool() -> str:
    path = shutil.which("promtool")
    if path:
        return path
    message = "promtool is not installed (apt-get install -y prometheus)"
    if REQUIRE_SERVICES:
        pytest.fail(message + " (REFUND_WORKER_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def test_promtool_checks_and_unit_tests_the_rules(tmp_path: Path) -> None:
    tool = promtool()
    for argv in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        result = subprocess.run([tool, *argv], cwd=PROMETHEUS, capture_output=True, text=True,
                                check=False, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    # The scrape configuration too, with the paths it names where the container has them.
    config = (PROMETHEUS / "prometheus.yml").read_text()
    (tmp_path / "token").write_text("t" * 32)
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    config = config.replace("/run/secrets/metrics_token", str(tmp_path / "token"))
    config = config.replace("/etc/prometheus/alerts.yml", str(tmp_path / "alerts.yml"))
    (tmp_path / "prometheus.yml").write_text(config)
    result = subprocess.run([tool, "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
