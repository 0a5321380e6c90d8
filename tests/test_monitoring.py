"""The Grafana dashboard and Prometheus rules in etc/: valid, tested, and over metrics jobhost exports.

``promtool`` comes from Debian's ``prometheus`` package (``.ci/run`` installs it); without it
locally the promtool tests skip; in CI (``CI`` or ``JOBHOST_REQUIRE_PROMTOOL`` set, as ``.ci/run``
does) they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "etc" / "grafana" / "jobhost.json"
SCHEMA = ROOT / "etc" / "grafana" / "dashboard.schema.json"
RULES = ROOT / "etc" / "prometheus" / "jobhost-rules.yml"
RULE_TESTS = ROOT / "etc" / "prometheus" / "jobhost-rules.test.yml"

#: PromQL functions, keywords and label names that look like metric names in an expression.
_NOT_METRICS = {"sum", "min", "max", "by", "rate", "increase", "histogram_quantile", "time", "and", "or",
                "le", "instance", "state", "window", "result", "reason", "endpoint", "status", "outcome", "limit",
                "humanizePercentage"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") or os.environ.get("JOBHOST_REQUIRE_PROMTOOL"):
            pytest.fail("promtool is missing in CI: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install --no-install-recommends prometheus)")
    return path


def exported_metric_names(tmp_path) -> set[str]:
    """Every sample name the daemon's registry exposes, webhooks and workers' sources included."""
    from prometheus_client.parser import text_string_to_metric_families
    from twisted.internet.testing import MemoryReactorClock

    from jobhost.config import parse_config
    from jobhost.tap import build_parts

    config = parse_config(
        {"preflight": {"addresses": ["127.0.0.1"]}, "store": {"url": "memory:"}, "tls": {"fallback": "reject"},
         "events": {"webhook_url": "http://127.0.0.1:9/hook"}},
        tmp_path,
    )
    parts = build_parts(MemoryReactorClock(), config)
    parts.metrics.issuance_failed("x", "connection")  # labelled counters appear once used
    parts.metrics.acme_request("newOrder", 201)
    text = parts.metrics.exposition().decode()
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (identifiers that are not functions or labels)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_strings)
    return {name for name in re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", without_ranges)
            if name not in _NOT_METRICS and not name.startswith("__")}


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def test_dashboard_matches_the_schema():
    """etc/grafana/jobhost.json validates against the checked-in schema of what jobhost relies on."""
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(DASHBOARD.read_text()), schema, cls=jsonschema.Draft202012Validator)


def test_the_schema_catches_a_broken_dashboard():
    """A dashboard whose panel lost its datasource, or whose query skips the datasource variable, is refused."""
    schema = json.loads(SCHEMA.read_text())
    doc = json.loads(DASHBOARD.read_text())
    stat = next(p for p in doc["panels"] if p["type"] == "stat")
    del stat["datasource"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
    doc = json.loads(DASHBOARD.read_text())
    next(p for p in doc["panels"] if p["type"] == "timeseries")["targets"][0]["datasource"]["uid"] = "abc123"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)


def test_dashboard_panels_have_unique_ids_and_fit_the_grid():
    """Panel ids are unique and no panel runs past Grafana's 24 columns."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)


def test_every_query_filters_by_instance():
    """Each dashboard query honours the instance variable."""
    for expr in dashboard_exprs():
        for selector in re.findall(r"jobhost_[a-z_]+(\{[^}]*\})?", expr):
            assert 'instance=~"$instance"' in selector, expr


def test_dashboard_and_rules_read_only_metrics_jobhost_exports(tmp_path):
    """Every metric a panel or an alert reads is one jobhost's /metrics exposes (a renamed metric fails here)."""
    exported = exported_metric_names(tmp_path)
    used = set()
    for expr in dashboard_exprs() + rule_exprs():
        used |= metric_names(expr)
    assert used, "the expressions were parsed"
    assert used - exported == set()
    # The alerts the issue asks for read these:
    for name in ("jobhost_certificates_expiring", "jobhost_domains_failing_over", "jobhost_ca_reachable",
                 "jobhost_rate_limited_total", "jobhost_cert_cache_total"):
        assert name in used


def test_promtool_check_rules():
    """`promtool check rules` accepts etc/prometheus/jobhost-rules.yml."""
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_promtool_rule_unit_tests_pass_and_cover_every_alert():
    """`promtool test rules` passes, and each alert has a case in which it fires."""
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    firing = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts == firing
    result = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_fails_for_an_alert_that_never_fires(tmp_path):
    """The rule tests have teeth: the same tests over a rule that can never fire fail."""
    broken = RULES.read_text().replace('jobhost_ca_reachable == 0', 'jobhost_ca_reachable == 2')
    assert broken != RULES.read_text()
    (tmp_path / "jobhost-rules.yml").write_text(broken)
    (tmp_path / "jobhost-rules.test.yml").write_text(RULE_TESTS.read_text())
    result = subprocess.run([promtool(), "test", "rules", "jobhost-rules.test.yml"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode != 0
    assert "JobhostCAUnreachable" in result.stdout + result.stderr
