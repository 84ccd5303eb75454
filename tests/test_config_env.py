"""Any setting from the environment (issue 14): CONNECTOR_<SECTION>__<KEY>, over config.yaml, named
in errors, and shown with secrets masked by `connector check --show-config`."""

from __future__ import annotations

import yaml

from connector.cli import main
from connector.config import ConfigError, load_settings
from tests.crm import PROJECT_ROOT

import pytest


def shipped(tmp_path):
    tree = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    tree["mappings"]["files"] = [str(PROJECT_ROOT / f) for f in tree["mappings"]["files"]]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_nested_keys_come_from_the_environment_over_the_file(tmp_path):
    settings = load_settings(shipped(tmp_path), environ={
        "CONNECTOR_WORKER__EMBEDDED": "false", "connector_worker__threads": "5",
        "CONNECTOR_DESTINATIONS__HUBSPOT__RATE_LIMIT__REQUESTS": "100",
        "CONNECTOR_MAPPINGS__FILES": f"[{PROJECT_ROOT / 'mappings' / 'hubspot.yaml'}]",
        "CONNECTOR_DATABASE_URL": "sqlite:///elsewhere.db"})  # one underscore: a ${VAR}, not an override
    assert settings.worker.embedded is False and settings.worker.threads == 5
    assert settings.destinations["hubspot"].rate_limit.requests == 100
    assert [str(f) for f in settings.mappings.files] == [str(PROJECT_ROOT / "mappings" / "hubspot.yaml")]
    assert settings.database.url == "sqlite:///elsewhere.db"  # config.yaml's ${CONNECTOR_DATABASE_URL:-...}
    assert settings.overridden["worker.embedded"] == "CONNECTOR_WORKER__EMBEDDED"


def test_a_bad_value_names_the_variable_that_set_it(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(shipped(tmp_path), environ={"CONNECTOR_WORKER__THREADS": "lots"})
    assert "worker.threads (set by CONNECTOR_WORKER__THREADS)" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_settings(shipped(tmp_path), environ={"CONNECTOR_WORKER__THREADS__MAX": "3"})
    assert "CONNECTOR_WORKER__THREADS__MAX: worker.threads is not a section" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        load_settings(shipped(tmp_path), environ={"CONNECTOR_WORKER__THREADZ": "3"})
    assert "worker.threadz (set by CONNECTOR_WORKER__THREADZ): unknown key" in str(caught.value)


def test_show_config_prints_what_is_in_force_with_secrets_masked(tmp_path, runner, monkeypatch):
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "pat-na1-very-secret")
    monkeypatch.setenv("OKENDO_WEBHOOK_SECRETS", "whsec_c2VjcmV0c2VjcmV0 whsec_b3RoZXJvdGhlcg==")
    monkeypatch.setenv("CONNECTOR_ADMIN_PASSWORD", "hunter2-but-longer")
    monkeypatch.setenv("CONNECTOR_DATABASE_URL", "postgresql://app:db-password@127.0.0.1:5432/ledger")
    monkeypatch.setenv("CONNECTOR_WORKER__EMBEDDED", "false")
    result = runner.invoke(main, ["--config", str(shipped(tmp_path)), "check", "--show-config"])
    assert result.exit_code == 0, result.output
    for secret in ("pat-na1-very-secret", "whsec_c2VjcmV0c2VjcmV0", "hunter2-but-longer", "db-password"):
        assert secret not in result.output
    assert "# worker.embedded: from CONNECTOR_WORKER__EMBEDDED" in result.output
    shown = yaml.safe_load(result.output.split("\n", 2)[2].split("\nconfig.yaml")[0].split(f"\n{tmp_path}")[0])
    assert shown["worker"]["embedded"] is False and shown["receiver"]["secrets"] == ["***", "***"]
    assert shown["destinations"]["hubspot"]["access_token"] == "***"
    assert shown["database"]["url"] == "postgresql://app:***@127.0.0.1:5432/ledger"
