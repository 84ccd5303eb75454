"""Alert targets: email over STARTTLS to aiosmtpd with a trustme certificate, the errors an operator sees
from `connector alerts test`, Slack's answers (gone: give up; busy: come back later), retries with a
limit, and no secret in any output."""

from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa
from click.testing import CliRunner

from connector.cli import main
from connector.ledger.models import utcnow
from connector.worker import pausing
from tests.alert_sinks import HttpSink, SmtpSink, server_tls
from tests.servers import free_port, write_config
from tests.test_alerts import HOOK, SLACK, alert_environ, loop_for, outbox, targets

PASSWORD = "smtp-pass-3141592653"


def run_cli(tmp_path, alerts: dict, *args: str, env: dict[str, str] | None = None):
    path = write_config(tmp_path / "config.yaml", {"database": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
                                                   "alerts": alerts})
    return CliRunner().invoke(main, ["--config", str(path), "alerts", *args], env=env or {})


def mail_target(smtp: SmtpSink, **options) -> dict:
    return {"type": "email", "host": "127.0.0.1", "port": smtp.port, "from_address": "connector@example.com",
            "to": ["ops@example.com", "oncall@example.com"], "timeout_s": 5, **options}


def test_email_goes_over_starttls_with_a_password_to_a_local_smtp_server(tmp_path):
    context, ca_file = server_tls(tmp_path)
    with SmtpSink(tls_context=context, credentials=("connector", PASSWORD)).running() as smtp:
        target = mail_target(smtp, username="connector", password="${SMTP_PASSWORD}", ca_file=ca_file)
        result = run_cli(tmp_path, {"targets": {"ops-mail": target}, "status_url": "https://connector.example.com"},
                         "test", env={"SMTP_PASSWORD": PASSWORD})
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok   ops-mail (email via 127.0.0.1:")
    [message] = smtp.messages
    assert message["Subject"] == "okendo-connector: Test alert from the okendo-crm-connector"
    assert message["To"] == "ops@example.com, oncall@example.com"
    assert message["Message-ID"].endswith("@example.com>")
    assert "Status page: https://connector.example.com/status" in message.get_content()
    assert PASSWORD not in result.output


def test_starttls_refused_or_an_unknown_certificate_is_said_plainly_and_the_password_never_sent(tmp_path):
    with SmtpSink().running() as plain:  # offers no STARTTLS
        result = run_cli(tmp_path, {"targets": {"ops-mail": mail_target(
            plain, username="connector", password="${SMTP_PASSWORD}")}}, "test", env={"SMTP_PASSWORD": PASSWORD})
    assert result.exit_code == 1
    assert f"FAIL ops-mail (email via 127.0.0.1:{plain.port} (starttls) to ops@example.com, oncall@example.com): " \
           f"127.0.0.1:{plain.port} does not offer STARTTLS" in result.output
    assert "1 target(s) did not take the test alert" in result.output
    assert not plain.messages and PASSWORD not in result.output

    context, _ = server_tls(tmp_path)
    with SmtpSink(tls_context=context, credentials=("connector", PASSWORD)).running() as smtp:
        result = run_cli(tmp_path, {"targets": {"ops-mail": mail_target(  # no ca_file: the system's CAs
            smtp, username="connector", password="${SMTP_PASSWORD}")}}, "test", env={"SMTP_PASSWORD": PASSWORD})
    assert result.exit_code == 1 and "CERTIFICATE_VERIFY_FAILED (a private CA? set ca_file)" in result.output
    assert not smtp.messages


def test_alerts_test_reports_each_target_and_never_shows_a_webhook_url(tmp_path):
    closed = free_port()
    with HttpSink() as http:
        env = {**alert_environ(http), "ALERT_SLACK_URL": f"http://127.0.0.1:{closed}{SLACK}"}
        result = run_cli(tmp_path, {"targets": targets(http)}, "test", env=env)
        shown = run_cli(tmp_path, {"targets": targets(http)}, "test", "--target", "ops-hook", env=env)
        unknown = run_cli(tmp_path, {"targets": targets(http)}, "test", "--target", "pager", env=env)
        masked = CliRunner().invoke(main, ["--config", str(tmp_path / "config.yaml"), "check", "--show-config"],
                                    env=env)
    assert result.exit_code == 1
    assert f"ok   ops-hook (JSON webhook at 127.0.0.1:{http.port}): test alert taken" in result.output
    assert f"FAIL ops-slack (Slack webhook at 127.0.0.1:{closed}): could not reach 127.0.0.1:{closed} " \
           "(ConnectionError)" in result.output
    assert shown.exit_code == 0 and "ops-slack" not in shown.output
    assert unknown.exit_code == 1 and "no alert target named pager under alerts.targets" in unknown.output
    [first, second] = http.taken(HOOK)
    assert first.body["condition"] == "test" and first.body["test"] is True and first.body["repeat"] is False
    for output in (result.output, shown.output, masked.output):
        assert "XXXXSECRETXXXX" not in output and "hook-token-123456" not in output
    assert "webhook_url: '***'" in masked.output


def test_alerts_test_without_targets_says_how_to_add_one(tmp_path):
    result = run_cli(tmp_path, {}, "test")
    assert result.exit_code == 1
    assert "alerts.targets is empty: add a webhook, slack or email target" in result.output


def row(engine, target: str) -> sa.Row:
    [found] = [r for r in outbox(engine) if r.target == target]
    return found


def test_a_hook_that_is_gone_is_given_up_at_once_and_a_busy_one_is_tried_again_when_it_asks(db_url, caplog):
    with HttpSink() as http:
        loop, engine = loop_for(db_url, http)
        http.status_by_path = {SLACK: 404, HOOK: 429}  # Slack: no_service; the hook: busy
        http.retry_after = "7"
        pausing.pause(engine, "hubspot", "maintenance", "ops")
        start = utcnow()
        with caplog.at_level(logging.WARNING, logger="connector.alerts.loop"):
            tick = loop.tick(start)
        assert (tick.written, tick.sent, tick.failed) == (2, 0, 2)
        slack, hook = row(engine, "ops-slack"), row(engine, "ops-hook")
        assert (slack.state, slack.attempts) == ("failed", 1)
        assert slack.last_error == f"127.0.0.1:{http.port} answered HTTP 404: no_service"
        assert "gave up sending to ops-slack after 1 attempt(s)" in caplog.text
        assert (hook.state, hook.attempts) == ("pending", 1)
        assert abs((hook.next_attempt_at - start).total_seconds() - 7) < 1  # as Retry-After asked
        assert "XXXXSECRETXXXX" not in caplog.text

        http.status_by_path = {}
        assert loop.tick(start + timedelta(seconds=3)).sent == 0  # not due yet
        assert loop.tick(start + timedelta(seconds=8)).sent == 1
        hook = row(engine, "ops-hook")
        assert (hook.state, hook.attempts) == ("sent", 2)
        assert len(http.taken(HOOK)) == 1 and not http.taken(SLACK)
        engine.dispose()


def test_a_message_that_keeps_failing_is_retried_with_backoff_then_given_up(db_url, caplog):
    with HttpSink() as http:
        loop, engine = loop_for(db_url, http, max_attempts=3, retry_base_s=10)
        http.status = 500
        pausing.pause(engine, "salesforce", "maintenance", "ops")
        start = utcnow()
        waits = []
        with caplog.at_level(logging.ERROR, logger="connector.alerts.loop"):
            moment = start
            for _ in range(3):
                loop.tick(moment)
                hook = row(engine, "ops-hook")
                waits.append(round((hook.next_attempt_at - moment).total_seconds()))
                moment = hook.next_attempt_at + timedelta(seconds=1)
            loop.tick(moment + timedelta(minutes=1))  # given up: not tried again
        hook = row(engine, "ops-hook")
        assert waits[:2] == [10, 20]  # 10 s, then doubled; the third try was the last
        assert (hook.state, hook.attempts) == ("failed", 3)
        assert hook.last_error == f"127.0.0.1:{http.port} answered HTTP 500: no_service"
        assert "gave up sending to ops-hook after 3 attempt(s)" in caplog.text
        assert len(http.seen) == 6 and not http.taken()  # three tries for each of the two targets
        engine.dispose()


def test_alerts_list_shows_what_waits_what_was_sent_and_why_a_try_failed(db_url, tmp_path):
    with HttpSink() as http:
        loop, engine = loop_for(db_url, http)
        http.status_by_path = {SLACK: 502}
        pausing.pause(engine, "hubspot", "maintenance", "ops")
        loop.tick()
        path = write_config(tmp_path / "config.yaml", {"database": {"url": db_url}})
        result = CliRunner().invoke(main, ["--config", str(path), "alerts", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2
    assert "pending  ops-slack: hubspot is paused (1 attempt(s)); last error: " \
           f"127.0.0.1:{http.port} answered HTTP 502: no_service" in lines[0]
    assert lines[1].endswith("sent     ops-hook: hubspot is paused (1 attempt(s))")
    engine.dispose()
