"""config.yaml: interpolation, validation and the messages a user sees."""

from __future__ import annotations

from pathlib import Path

import pytest

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
