"""`connector doctor`: every check a first run depends on, each with what to do when it fails.

The checks run in the order a setup is built (config, mappings, ledger, secrets, CRMs,
Okendo), and a check that needs an earlier one to pass is reported as skipped rather
than failing for the same reason twice. Nothing is written: a missing SQLite ledger is
reported, not created.
"""

from __future__ import annotations

import ipaddress
import os

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests
from sqlalchemy.exc import SQLAlchemyError

from connector.config import (
    ConfigError,
    HubSpotDestinationConfig,
    SalesforceDestinationConfig,
    Settings,
    load_settings,
)
from connector.logs import configure_logging
from connector.mapping.engine import MappingSet

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"

# What to do when a CRM destination is not ready, by kind.
_CRM_FIXES = {
    "hubspot": ("check HUBSPOT_ACCESS_TOKEN (a private app's token with the CRM scopes) and HUBSPOT_BASE_URL; "
                "create missing properties with `connector setup hubspot`"),
    "salesforce": ("check the SALESFORCE_* credentials and SALESFORCE_LOGIN_URL / SALESFORCE_INSTANCE_URL; create "
                   "missing objects and fields, and grant the integration user access to them, with "
                   "`connector setup salesforce`"),
}
_CRM_NAMES = {"hubspot": "HubSpot", "salesforce": "Salesforce"}
_DRY_RUN_FIXES = {
    "hubspot": "set HUBSPOT_ACCESS_TOKEN to deliver to HubSpot",
    "salesforce": ("set SALESFORCE_CLIENT_ID with SALESFORCE_USERNAME and SALESFORCE_PRIVATE_KEY_FILE (JWT) or "
                   "SALESFORCE_CLIENT_SECRET, to deliver to Salesforce"),
}


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | FAIL | skip
    summary: str
    fix: str | None = None
    details: tuple[str, ...] = field(default_factory=tuple)


def run_checks(config_path: Path | None) -> Iterator[Check]:
    """Yield each check as it completes (the CRM checks make network calls)."""
    try:
        settings = load_settings(config_path)
    except ConfigError as error:
        first, *rest = str(error).splitlines()
        yield Check("config", FAIL, first, "correct what is listed (config.yaml in the project shows every key; "
                    "`connector check` repeats this)", tuple(line.strip() for line in rest))
        yield Check("everything else", SKIP, "needs a valid config")
        return
    configure_logging(settings)  # the secrets it holds are redacted from anything a library logs
    yield Check("config", OK, f"{settings.source} is valid")

    mappings = yield from _mappings(settings)
    yield from _ledger(settings)
    yield _webhook_secret(settings)
    yield _status_page(settings)
    for name in sorted(settings.destinations):
        yield _destination(settings, mappings, name)
    yield _okendo_api(settings)


def _mappings(settings: Settings) -> Iterator[Check]:
    from connector.mapping.loader import load_mappings

    try:
        mappings = load_mappings(settings)
    except ConfigError as error:
        first, *rest = str(error).splitlines()
        yield Check("mappings", FAIL, first, "correct each mapping listed (docs/mappings.md; "
                    "`connector check` repeats this)", tuple(line.strip() for line in rest))
        return None
    if not mappings.mappings:
        yield Check("mappings", WARN, "no mapping is enabled: events are stored but nothing is delivered",
                    "enable the shipped mappings in config.yaml (mappings.files) or add your own")
    else:
        yield Check("mappings", OK, f"{len(mappings.mappings)} enabled, for {len(mappings.handled_events())} "
                    "event type(s)")
    return mappings


def _ledger(settings: Settings) -> Iterator[Check]:
    from connector.ledger.database import create_ledger_engine, normalize_url
    from connector.ledger.migrate import current_revision, head_revision

    url = normalize_url(settings.database.url, settings.base_dir)
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
            and not Path(url.database).exists():
        # Opening it would create an empty file: report instead, and let `db upgrade` create it.
        yield Check("ledger", FAIL, f"no ledger at {url.database} yet",
                    "run `connector db upgrade` (`make run` does it before serving)")
        yield Check("migrations", SKIP, "needs the ledger")
        return
    try:
        engine = create_ledger_engine(settings)
    except ConfigError as error:
        yield Check("ledger", FAIL, str(error), "use sqlite:///path.db or postgresql://user@host:5432/db")
        yield Check("migrations", SKIP, "needs the ledger")
        return
    try:
        revision = current_revision(engine)
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).splitlines()[0]
        yield Check("ledger", FAIL, f"cannot open {shown}: {error.__class__.__name__}: {reason}",
                    f"check database.url in {settings.source} (CONNECTOR_DATABASE_URL), and that the database "
                    "server runs and accepts these credentials")
        yield Check("migrations", SKIP, "needs the ledger")
        return
    finally:
        engine.dispose()
    yield Check("ledger", OK, f"{shown} answers")
    head = head_revision()
    if revision == head:
        yield Check("migrations", OK, f"at revision {head}, the latest")
    else:
        yield Check("migrations", FAIL, f"at revision {revision or 'none'}; this version needs {head}",
                    "run `connector db upgrade` (`make run` does it before serving)")


def _webhook_secret(settings: Settings) -> Check:
    count = len(settings.receiver.secrets)
    if count:
        return Check("webhook secret", OK, f"{count} signing secret(s) configured (OKENDO_WEBHOOK_SECRETS)")
    if settings.receiver.insecure_dev_mode:
        return Check("webhook secret", WARN, "none, and receiver.insecure_dev_mode accepts UNSIGNED events",
                     "set OKENDO_WEBHOOK_SECRETS and turn insecure_dev_mode off before Okendo points here")
    return Check("webhook secret", FAIL, "none configured: /webhooks/okendo answers 503 to every event",
                 "set OKENDO_WEBHOOK_SECRETS to the whsec_ secret `connector okendo subscribe` printed "
                 "(to try things locally any whsec_ secret does: README \"Try it locally\")")


def _status_page(settings: Settings) -> Check:
    if settings.status.admin_password:
        return Check("status page", OK, "password login (CONNECTOR_ADMIN_PASSWORD)")
    fix = "set CONNECTOR_ADMIN_PASSWORD and restart: without one, nothing tells a visitor from this machine"
    if settings.status.trusted_proxies:
        return Check("status page", FAIL, f"no CONNECTOR_ADMIN_PASSWORD behind {settings.status.trusted_proxies} "
                     "proxy hop(s) (status.trusted_proxies): every request is refused until one is set", fix)
    bind = os.environ.get("BIND", "127.0.0.1:8000")
    if not binds_loopback_only(bind):
        return Check("status page", FAIL, f"no CONNECTOR_ADMIN_PASSWORD and the server binds {bind}: the status page "
                     "and its API are refused to everyone but this machine, and must not rely on that", fix)
    return Check("status page", WARN, "no CONNECTOR_ADMIN_PASSWORD: /status answers direct requests from this "
                 "machine only (never through a proxy or tunnel)",
                 "set CONNECTOR_ADMIN_PASSWORD to open it to others behind a login")


def binds_loopback_only(bind: str) -> bool:
    """Whether every address in gunicorn's BIND (`host:port`, `[::1]:port`, `unix:path`, several
    separated by commas or spaces) is on this machine's loopback. A unix socket means a proxy."""
    for part in bind.replace(",", " ").split():
        if part.startswith(("unix:", "fd://")):
            return False
        host = part.rsplit(":", 1)[0] if part.count(":") == 1 or part.startswith("[") else part
        host = host.strip("[]")
        if host == "localhost":
            continue
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:
            return False  # a host name other than localhost: it may resolve anywhere
    return True


def _destination(settings: Settings, mappings: MappingSet | None, name: str) -> Check:
    from connector.destinations import build_destination, has_credentials

    config = settings.destinations[name]
    crm = _CRM_NAMES[config.type]
    label = f"destination {name}" + (f" ({crm})" if name != config.type else "")
    if not has_credentials(config):
        return Check(label, WARN, "no credentials, so dry-run: nothing is written, the status page shows what "
                     "would be", _DRY_RUN_FIXES[config.type])
    if mappings is None:
        return Check(label, SKIP, "needs valid mappings")
    if name not in mappings.destinations():
        return Check(label, WARN, "no enabled mapping writes to it",
                     "remove it from destinations, or enable a mapping for it")
    address = _address(config)
    unreachable = _unreachable(address)
    if unreachable:
        return Check(label, FAIL, f"cannot reach {crm} at {address} ({unreachable})",
                     f"check {_address_setting(name, config)} and this machine's network (proxy, firewall, DNS)")
    # One attempt per call: the doctor wants an answer, not the worker's patience.
    quick = settings.model_copy(update={"destinations": {
        **settings.destinations, name: config.model_copy(update={"retry_attempts": 1})}})
    try:
        destination = build_destination(name, quick)
    except Exception as error:  # e.g. an unreadable private key file
        return Check(label, FAIL, f"cannot set up {crm}: {type(error).__name__}: {error}", _CRM_FIXES[config.type])
    try:
        problems = destination.check_remote(mappings)
    except Exception as error:  # a CRM library may raise anything; the doctor reports it
        problems = [f"{name}: {type(error).__name__}: {error}"]
    finally:
        destination.close()
    if problems:
        return Check(label, FAIL, f"{crm} at {address} is not ready for the mappings", _CRM_FIXES[config.type],
                     tuple(problems))
    return Check(label, OK, f"{crm} at {address}: credentials accepted; every object and field the mappings "
                 "write exists")


def _address(config: HubSpotDestinationConfig | SalesforceDestinationConfig) -> str:
    if isinstance(config, HubSpotDestinationConfig):
        return config.base_url
    if config.auth_mode == "token":
        return config.instance_url or ""
    return config.login_url


def _address_setting(name: str, config: HubSpotDestinationConfig | SalesforceDestinationConfig) -> str:
    if isinstance(config, HubSpotDestinationConfig):
        return f"destinations.{name}.base_url (HUBSPOT_BASE_URL in the shipped config)"
    if config.auth_mode == "token":
        return f"destinations.{name}.instance_url (SALESFORCE_INSTANCE_URL in the shipped config)"
    return f"destinations.{name}.login_url (SALESFORCE_LOGIN_URL in the shipped config)"


def _unreachable(url: str) -> str | None:
    """Why nothing answers at `url`, or None when something does (any HTTP status will do)."""
    try:
        requests.get(url, timeout=5, allow_redirects=False).close()
    except requests.exceptions.SSLError:
        return "TLS handshake failed: a proxy, or a private CA missing from REQUESTS_CA_BUNDLE"
    except requests.Timeout:
        return "no answer within 5 s"
    except requests.RequestException as error:
        return "connection refused" if "refused" in str(error).lower() else type(error).__name__
    return None


def _okendo_api(settings: Settings) -> Check:
    from connector.okendo_api import OkendoApi, OkendoApiError

    config = settings.okendo
    if not (config.user_id and config.api_key):
        return Check("okendo api", SKIP, "OKENDO_USER_ID / OKENDO_API_KEY not set (only `connector okendo "
                     "subscribe` and `list` need them)")
    with OkendoApi(config.api_base_url, config.user_id, config.api_key, timeout=config.timeout_s) as api:
        try:
            subscriptions = api.list_subscriptions()
        except OkendoApiError as error:
            # Okendo's errors already say what to check.
            return Check("okendo api", FAIL, str(error), None, tuple(error.details))
    ours = [s for s in subscriptions if (s.endpoint_url or "").rstrip("/").endswith("/webhooks/okendo")]
    if not ours:
        return Check("okendo api", WARN, f"credentials accepted; {len(subscriptions)} subscription(s), none to a "
                     "/webhooks/okendo endpoint",
                     "run `connector okendo subscribe --url https://YOUR-HOST/webhooks/okendo`")
    return Check("okendo api", OK, "credentials accepted; subscribed: "
                 + ", ".join(f"{s.endpoint_url} ({len(s.events)} event(s))" for s in ours))
