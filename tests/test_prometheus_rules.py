"""deploy/prometheus/alerts.yml: valid for promtool, its unit tests pass, and every metric it reads
is one the connector exports (so renaming a metric cannot silently blind an alert)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from connector import create_app
from connector.alerts.config import AlertConditionsConfig
from connector.health import init_observability
from connector.ledger.migrate import upgrade
from connector.runtime import EXTENSION_KEY
from tests.crm import PROJECT_ROOT

RULES = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = PROJECT_ROOT / "deploy" / "prometheus" / "alerts_test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)")


def rules() -> dict[str, dict]:
    document = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule for group in document["groups"] for rule in group["rules"]}


@needs_promtool
def test_promtool_accepts_the_rules():
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


@needs_promtool
def test_the_rules_fire_when_and_only_when_they_should():
    result = subprocess.run([PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            timeout=120, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == set(rules()), "every rule has a unit test"


def test_every_metric_the_rules_read_is_exported(sqlite_url):
    app = create_app({"database": {"url": sqlite_url},
                      "destinations": {"hubspot": {"type": "hubspot"}, "salesforce": {"type": "salesforce"}}})
    init_observability(app)
    upgrade(app.extensions[EXTENSION_KEY].engine)
    app.test_client().post("/webhooks/okendo", data=b"{}")  # one webhook answer, so its histogram exists
    exported = app.test_client().get("/metrics").text
    read = {name for rule in rules().values() for name in re.findall(r"okendo_connector_\w+", rule["expr"])}
    assert len(read) >= 7
    for name in sorted(read):
        assert re.search(rf"^{name}(\{{| )", exported, re.M), f"{name} is in alerts.yml but not in /metrics"
    app.extensions[EXTENSION_KEY].engine.dispose()


def test_the_rules_thresholds_are_the_connectors_defaults():
    oldest = rules()["OkendoConnectorOldestWaiting"]["expr"]
    assert oldest.endswith(f"> {AlertConditionsConfig().oldest_waiting_minutes * 60:.0f}")
