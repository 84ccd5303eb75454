"""config.yaml: interpolation, validation and the messages a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from connector.config import ConfigError, load_settings, settings_from_mapping
from tests.signing import OTHER_SECRET, SECRET

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_shipped_config_is_valid_with_no_environment_at_all(tmp_path):
    settings = load_settings(PROJECT_ROOT / "config.yaml", environ={})
    assert settings.database.url == "sqlite:///data/ledger.db"
    assert settings.database.sqlite_synchronous == "FULL"
    assert settings.receiver.secrets == [] and settings.receiver.insecure_dev_mode is False
    assert settings.destinations["hubspot"].access_token is None
    assert settings.destinations["hubspot"].base_url == "https://api.hubapi.com"
    assert settings.status.admin_password is None


def test_shipped_config_reads_every_documented_variable():
    environ = {
        "CONNECTOR_DATABASE_URL": "postgresql://u@db:5432/ledger",
        "OKENDO_WEBHOOK_SECRETS": f"{SECRET} {OTHER_SECRET}",
        "HUBSPOT_ACCESS_TOKEN": "pat-na1-123",
        "HUBSPOT_BASE_URL": "http://127.0.0.1:9999",
        "SALESFORCE_INSTANCE_URL": "https://example.my.salesforce.com",
        "SALESFORCE_ACCESS_TOKEN": "00D!abc",
        "CONNECTOR_ADMIN_PASSWORD": "hunter2",
        "SALESFORCE_LOGIN_URL": "https://acme.my.salesforce.com",
        "SALESFORCE_CLIENT_ID": "3MVG9",
        "SALESFORCE_CLIENT_SECRET": "shh",
        "SALESFORCE_USERNAME": "integration@acme.example",
        "SALESFORCE_PRIVATE_KEY_FILE": "keys/sf.pem",
    }
    settings = load_settings(PROJECT_ROOT / "config.yaml", environ=environ)
    salesforce = settings.destinations["salesforce"]
    assert (salesforce.login_url, salesforce.client_id, salesforce.client_secret, salesforce.username,
            salesforce.private_key_file) == ("https://acme.my.salesforce.com", "3MVG9", "shh",
                                             "integration@acme.example", "keys/sf.pem")
    assert salesforce.auth_mode == "jwt"
    assert settings.database.url == "postgresql://u@db:5432/ledger"
    assert settings.receiver.secrets == [SECRET, OTHER_SECRET]
    assert settings.destinations["hubspot"].access_token == "pat-na1-123"
    assert settings.destinations["hubspot"].base_url == "http://127.0.0.1:9999"
    assert settings.destinations["salesforce"].instance_url == "https://example.my.salesforce.com"
    assert settings.destinations["salesforce"].access_token == "00D!abc"
    assert settings.status.admin_password == "hunter2"


@pytest.mark.parametrize(
    "value,environ,expected",
    [
        ("${A}", {"A": "1"}, "1"),
        ("${A:-fallback}", {}, "fallback"),
        ("${A:-fallback}", {"A": ""}, "fallback"),
        ("${A:-fallback}", {"A": "set"}, "set"),
        ("pre-${A}-post", {}, "pre--post"),
        ("cost: $$5 ${A}", {"A": "x"}, "cost: $5 x"),
    ],
)
def test_interpolation_follows_shell_rules(value, environ, expected):
    settings = settings_from_mapping({"database": {"url": f"sqlite:///{value}"}}, environ=environ)
    assert settings.database.url == f"sqlite:///{expected}"


def test_a_reference_to_an_unset_variable_leaves_the_default_in_force():
    settings = settings_from_mapping({"receiver": {"max_body_bytes": "${UNSET_LIMIT}"}}, environ={})
    assert settings.receiver.max_body_bytes == 1_048_576


def test_numbers_and_booleans_can_come_from_the_environment():
    settings = settings_from_mapping(
        {"receiver": {"max_body_bytes": "${LIMIT}", "insecure_dev_mode": "${DEV:-false}"}},
        environ={"LIMIT": "2048", "DEV": "true"},
    )
    assert settings.receiver.max_body_bytes == 2048 and settings.receiver.insecure_dev_mode is True


@pytest.mark.parametrize(
    "tree,key",
    [
        ({"receiver": {"secrets": SECRET}}, "receiver.secrets"),
        ({"destinations": {"hubspot": {"type": "hubspot", "access_token": "pat-literal"}}},
         "destinations.hubspot.access_token"),
        ({"status": {"admin_password": "letmein"}}, "status.admin_password"),
    ],
)
def test_literal_secrets_in_the_file_are_refused_without_echoing_them(tree, key):
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(tree, environ={}, source="config.yaml")
    message = str(caught.value)
    assert f"{key}: secrets are only read from the environment" in message
    assert "${SOME_VARIABLE}" in message
    assert "pat-literal" not in message and "letmein" not in message and SECRET not in message


def test_unknown_keys_are_named_with_their_path(tmp_path):
    path = write(tmp_path, "receiver:\n  max_bodybytes: 10\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value) == (
        f"{path} is not valid:\n  receiver.max_bodybytes: unknown key (check its spelling and indentation)"
    )


def test_wrong_values_are_named_with_path_and_value(tmp_path):
    path = write(tmp_path, "receiver:\n  max_body_bytes: lots\ndatabase:\n  sqlite_synchronous: OFF\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    message = str(caught.value)
    assert "receiver.max_body_bytes: Input should be a valid integer" in message and "(got 'lots')" in message
    assert "database.sqlite_synchronous: Input should be 'FULL', 'EXTRA' or 'NORMAL'" in message


def test_an_unusable_secret_is_reported_by_position_only():
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"receiver": {"secrets": "${S}"}}, environ={"S": f"{SECRET} whsec_%%%notbase64"})
    message = str(caught.value)
    assert "receiver.secrets: secret #2 is not a valid Svix signing secret" in message
    assert "notbase64" not in message


def test_unknown_destination_type_is_refused():
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"destinations": {"crm": {"type": "pipedrive"}}}, environ={})
    assert "destinations.crm" in str(caught.value) and "'hubspot', 'salesforce'" in str(caught.value)


def test_bad_database_url_is_explained():
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"database": {"url": "not a url"}}, environ={})
    assert "database.url: not a database URL" in str(caught.value)


def test_invalid_yaml_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "receiver:\n  secrets: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value).startswith(f"{path}: invalid YAML:")
    assert "line" in str(caught.value)


def test_missing_file_says_how_to_fix_it(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "nope.yaml", environ={})
    assert "config file not found" in str(caught.value) and "CONNECTOR_CONFIG" in str(caught.value)


def test_relative_sqlite_paths_are_relative_to_the_config_file(tmp_path):
    from connector.ledger.database import normalize_url

    settings = load_settings(write(tmp_path, "database:\n  url: sqlite:///data/x.db\n"), environ={})
    assert normalize_url(settings.database.url, settings.base_dir).database == str(tmp_path / "data" / "x.db")


# --- alerts -----------------------------------------------------------------------------------


def test_shipped_config_sends_no_alerts_until_a_target_is_added_and_its_example_targets_validate():
    settings = load_settings(PROJECT_ROOT / "config.yaml", environ={})
    assert settings.alerts.targets == {} and not settings.alerts.enabled
    assert settings.alerts.status_url is None and settings.alerts.interval_minutes == 60
    # The commented example, uncommented, is a valid configuration.
    text = (PROJECT_ROOT / "config.yaml").read_text()
    commented = text[text.index("  # targets:"):]
    example = "\n".join(line.replace("# ", "", 1) for line in commented.splitlines())
    environ = {"ALERT_WEBHOOK_URL": "https://alerts.example.com/hook", "ALERT_WEBHOOK_TOKEN": "tok-123456",
               "ALERT_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/abc",
               "ALERT_SMTP_USERNAME": "connector", "ALERT_SMTP_PASSWORD": "pw-123456",
               "CONNECTOR_PUBLIC_URL": "https://connector.example.com/"}
    settings = settings_from_mapping(yaml.safe_load(text[:text.index("  # targets:")] + example), environ=environ)
    assert sorted(settings.alerts.targets) == ["ops-email", "ops-slack", "ops-webhook"]
    assert settings.alerts.targets["ops-email"].effective_port == 587
    assert settings.alerts.targets["ops-slack"].webhook_url == "https://hooks.slack.com/services/T0/B0/abc"
    assert settings.alerts.status_url == "https://connector.example.com"


@pytest.mark.parametrize("target,key", [
    ({"type": "slack", "webhook_url": "https://hooks.slack.com/services/T0/B0/literal-token"}, "webhook_url"),
    ({"type": "webhook", "webhook_url": "${URL}", "bearer_token": "literal-token"}, "bearer_token"),
    ({"type": "email", "host": "smtp.example.com", "from_address": "a@example.com", "to": ["b@example.com"],
      "username": "u", "password": "literal-token"}, "password"),
])
def test_alert_target_secrets_in_the_file_are_refused_without_echoing_them(target, key):
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"alerts": {"targets": {"ops": target}}}, environ={"URL": "https://a.example.com"},
                              source="config.yaml")
    message = str(caught.value)
    assert f"alerts.targets.ops.{key}: secrets are only read from the environment" in message
    assert "literal-token" not in message


@pytest.mark.parametrize("target,environ,expected", [
    ({"type": "slack", "webhook_url": "${SLACK}"}, {},
     "alerts.targets.ops.slack: webhook_url is not set: write `webhook_url: ${SOME_VARIABLE}`"),
    ({"type": "slack", "webhook_url": "${SLACK}"}, {"SLACK": "http://hooks.example.com/services/T0/B0/tok"},
     "alerts.targets.ops.slack.webhook_url: must be an https:// URL (http:// only to localhost"),
    ({"type": "pagerduty"}, {}, "alerts.targets.ops: Input tag 'pagerduty' found using 'type' does not match"),
    ({"type": "email", "host": "smtp.example.com", "security": "none", "username": "u", "password": "${PW}",
      "from_address": "a@example.com", "to": ["b@example.com"]}, {"PW": "pw-123456"},
     "security: none would send the SMTP password unencrypted"),
    ({"type": "email", "host": "smtp.example.com", "from_address": "a@example.com",
      "to": ["ops@example.com\r\nBcc: x@evil.example"]}, {},
     "alerts.targets.ops.email.to: address #1 is not one email address"),
    ({"type": "email", "host": "smtp.example.com", "from_address": "a@example.com", "to": ["b@example.com"],
      "usename": "u"}, {}, "alerts.targets.ops.email.usename: unknown key"),
])
def test_a_bad_alert_target_is_refused_naming_its_key(target, environ, expected):
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"alerts": {"targets": {"ops": target}}}, environ=environ, source="config.yaml")
    assert expected in str(caught.value)
    assert "tok" not in str(caught.value) and "pw-123456" not in str(caught.value)


def test_alert_settings_come_from_the_environment_too():
    settings = settings_from_mapping({}, environ={"CONNECTOR_ALERTS__INTERVAL_MINUTES": "15",
                                                  "CONNECTOR_ALERTS__CONDITIONS__OLDEST_WAITING_MINUTES": "null"})
    assert settings.alerts.interval_minutes == 15 and settings.alerts.conditions.oldest_waiting_minutes is None
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({"alerts": {"status_url": "connector.example.com"}}, environ={})
    assert "alerts.status_url: must be the connector's public address, such as https://connector.example.com" \
        in str(caught.value)
