"""The `connector` command line: check and db upgrade."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
import yaml

from connector.cli import main
from connector.ledger.database import normalize_url
from connector.ledger.migrate import head_revision
from tests.signing import SECRET

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def config_file(tmp_path: Path, tree: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_check_accepts_the_shipped_config(runner, monkeypatch):
    monkeypatch.setenv("OKENDO_WEBHOOK_SECRETS", SECRET)
    result = runner.invoke(main, ["--config", str(PROJECT_ROOT / "config.yaml"), "check"])
    assert result.exit_code == 0, result.output
    assert "config.yaml: OK" in result.output
    assert "receiver: 1 webhook secret(s) configured" in result.output
    assert SECRET not in result.output


def test_check_warns_when_no_secret_is_set(runner, monkeypatch):
    monkeypatch.delenv("OKENDO_WEBHOOK_SECRETS", raising=False)
    result = runner.invoke(main, ["--config", str(PROJECT_ROOT / "config.yaml"), "check"])
    assert result.exit_code == 0
    assert "no webhook secret configured; events are refused (set OKENDO_WEBHOOK_SECRETS)" in result.output


def test_check_fails_with_the_key_path_on_a_broken_config(runner, tmp_path):
    path = config_file(tmp_path, {"receiver": {"max_body_bytes": -5}})
    result = runner.invoke(main, ["--config", str(path), "check"])
    assert result.exit_code == 1
    assert f"{path} is not valid:" in result.output
    assert "receiver.max_body_bytes: Input should be greater than or equal to 1024 (got -5)" in result.output


def test_check_reads_the_config_path_from_the_environment(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("CONNECTOR_CONFIG", str(config_file(tmp_path, {"receiver": {"bogus": 1}})))
    result = runner.invoke(main, ["check"])
    assert result.exit_code == 1 and "receiver.bogus: unknown key" in result.output


def test_check_hides_the_database_password(runner, tmp_path):
    path = config_file(tmp_path, {"database": {"url": "postgresql://app:s3cret@db:5432/ledger"}})
    result = runner.invoke(main, ["--config", str(path), "check"])
    assert result.exit_code == 0
    assert "s3cret" not in result.output and "db:5432/ledger" in result.output


def test_db_upgrade_creates_the_ledger_and_is_idempotent(runner, tmp_path, db_url):
    path = config_file(tmp_path, {"database": {"url": db_url}})
    first = runner.invoke(main, ["--config", str(path), "db", "upgrade"])
    second = runner.invoke(main, ["--config", str(path), "db", "upgrade"])

    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert f"ledger at revision {head_revision()}" in second.output
    engine = sa.create_engine(normalize_url(db_url))
    tables = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert {"events", "deliveries", "delivery_attempts", "record_links"} <= tables


def test_db_upgrade_reports_an_unreachable_database(runner, tmp_path):
    path = config_file(tmp_path, {"database": {"url": "postgresql://postgres@127.0.0.1:9/none", "connect_timeout_s": 1}})
    result = runner.invoke(main, ["--config", str(path), "db", "upgrade"])
    assert result.exit_code == 1
    assert "cannot migrate the ledger" in result.output and "database.url" in result.output


def test_version_and_short_help(runner):
    from importlib.metadata import version

    shown = runner.invoke(main, ["--version"])
    assert shown.exit_code == 0 and shown.output.strip() == f"connector, version {version('okendo-crm-connector')}"
    short = runner.invoke(main, ["-h"])
    assert short.exit_code == 0 and "[OPTIONS] COMMAND [ARGS]" in short.output
    assert "replay" in short.output


def test_a_misspelt_destination_or_topic_is_refused_with_a_suggestion(runner, tmp_path):
    path = config_file(tmp_path, {"database": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
                                  "destinations": {"hubspot": {"type": "hubspot"},
                                                   "salesforce": {"type": "salesforce"}}})
    assert runner.invoke(main, ["--config", str(path), "db", "upgrade"]).exit_code == 0
    misspelt = runner.invoke(main, ["--config", str(path), "replay", "--destination", "hubsopt", "--yes"])
    assert misspelt.exit_code == 2
    assert "'hubsopt' is not a destination (configured, or with deliveries in the ledger); did you mean 'hubspot'?" \
        in misspelt.output
    topic = runner.invoke(main, ["--config", str(path), "replay", "--topic", "reveiw.create", "--yes"])
    assert topic.exit_code == 2 and "did you mean 'review.create'" in topic.output
    unknown = runner.invoke(main, ["--config", str(path), "replay", "--destination", "zzz", "--yes"])
    assert unknown.exit_code == 2 and "(known: hubspot, salesforce)" in unknown.output
