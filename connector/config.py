"""Load `config.yaml`: interpolate `${VAR}` from the environment, then validate.

The file is the user's interface, so every error names the file, the key path
and what to do. Secrets may only arrive through `${VAR}` references: a literal
token written into the file is refused, so a config file can be committed or
pasted into a ticket without leaking anything.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connector import config_overrides
from connector.alerts.config import AlertsConfig
from connector.mapping.schema import MappingsConfig

DEFAULT_CONFIG_PATH = "config.yaml"
CONFIG_PATH_ENV = "CONNECTOR_CONFIG"

# `$$` is a literal `$`; `${NAME}` is the variable (empty when unset);
# `${NAME:-default}` falls back when the variable is unset or empty (shell rules).
_ENV_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PURE_ENV_REFERENCE = re.compile(r"^\s*\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}\s*$")

# Keys whose values are credentials, wherever they appear in the tree (a Slack webhook URL is one).
SECRET_KEYS = frozenset(
    {"secrets", "access_token", "client_secret", "private_key", "password", "admin_password", "viewer_password",
     "api_key", "webhook_url", "bearer_token"}
)


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


class _Section(BaseModel):
    # Unknown keys are typos until proven otherwise.
    model_config = ConfigDict(extra="forbid")


class DatabaseConfig(_Section):
    url: str = "sqlite:///data/ledger.db"
    # FULL: an acknowledged event survives a power loss (Okendo will not resend
    # it). NORMAL is faster in WAL mode but may lose the last commits on power
    # loss (never on a process crash). https://www.sqlite.org/pragma.html#pragma_synchronous
    sqlite_synchronous: Literal["FULL", "EXTRA", "NORMAL"] = "FULL"
    # How long one write waits for the ledger's lock (on PostgreSQL: the lock_timeout of writes; reads
    # wait 0.25 s). A webhook's answer is bounded by receiver.answer_within_s regardless.
    busy_timeout_ms: int = Field(5000, ge=0, le=60_000)
    connect_timeout_s: int = Field(5, ge=1, le=60)
    pool_size: int = Field(5, ge=1, le=100)

    @field_validator("url")
    @classmethod
    def _url_parses(cls, url: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(url)
        except ArgumentError:
            raise ValueError(
                "not a database URL; use sqlite:///data/ledger.db or postgresql://user@host:5432/dbname"
            ) from None
        return url


def _split_secrets(value: Any) -> Any:
    if isinstance(value, str):
        return [part for part in re.split(r"[\s,]+", value) if part]
    return value


class ReceiverConfig(_Section):
    # One or more `whsec_` secrets; several during a rotation.
    secrets: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)
    # Accept unsigned events when no secret is configured. Development only.
    insecure_dev_mode: bool = False
    # Every webhook is answered within this bound, queue included: 202 once stored, else 503 with
    # Retry-After (Svix retries). Svix gives up on an attempt after 15 s
    # (https://docs.svix.com/receiving/introduction), so the default leaves a margin.
    answer_within_s: float = Field(10.0, ge=1, le=14)

    _split = field_validator("secrets", mode="before")(_split_secrets)

    @field_validator("secrets")
    @classmethod
    def _secrets_are_usable(cls, secrets: list[str]) -> list[str]:
        from standardwebhooks.webhooks import Webhook

        for position, secret in enumerate(secrets, start=1):
            try:
                Webhook(secret)
            except Exception:
                # Never echo the secret itself.
                raise ValueError(
                    f"secret #{position} is not a valid Svix signing secret "
                    "(expected `whsec_` followed by base64, as Okendo returned it)"
                ) from None
        return secrets


class RateLimitConfig(_Section):
    requests: int | None = Field(None, ge=1)  # None: no request-rate cap
    per_seconds: float = Field(10.0, gt=0)
    max_concurrency: int | None = Field(None, ge=1)


class _DestinationBase(_Section):
    # Short retries inside a call (transient errors); longer ones go to the worker's schedule.
    retry_attempts: int = Field(3, ge=1, le=10)
    max_retry_wait_s: float = Field(15.0, ge=0, le=120)
    connect_timeout_s: float = Field(5.0, gt=0, le=60)
    # Of the CRM's daily API allocation (shared with the merchant's other integrations), the share the
    # connector leaves alone: it stops delivering when only this much is left (connector.worker.budget).
    daily_reserve_percent: float = Field(10.0, ge=0, le=90)


class HubSpotDestinationConfig(_DestinationBase):
    type: Literal["hubspot"]
    access_token: str | None = None
    base_url: str = "https://api.hubapi.com"
    timeout_s: float = Field(10.0, gt=0, le=120)
    # HubSpot allows 190 requests per 10 s on Professional/Enterprise private apps
    # (https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines);
    # stay under it with a margin.
    rate_limit: RateLimitConfig = Field(default_factory=lambda: RateLimitConfig(requests=170, per_seconds=10.0))
    batch_size: int = Field(100, ge=1, le=100)
    # A note property holding "resourceType:id", so a create whose answer was
    # lost can be found again instead of duplicated. null switches it off.
    source_key_property: str | None = "okendo_source_key"
    # HubSpot's search is eventually consistent: a note created a moment ago may not be found yet. A
    # retried create whose earlier attempt may have reached HubSpot waits this long after that attempt
    # before it concludes from an empty search that the note does not exist, and creates it.
    search_settle_s: float = Field(60.0, ge=0, le=3600)
    property_group: str = "okendo"
    # Your HubSpot account id: the status page links records to app.hubspot.com with it.
    portal_id: str | None = None
    # HubSpot's daily limit starts over at midnight in the account's time zone (its settings say which).
    daily_reset_timezone: str = "UTC"

    @field_validator("daily_reset_timezone")
    @classmethod
    def _known_time_zone(cls, name: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{name!r} is not a time zone name (e.g. UTC, America/New_York)") from None
        return name


class SalesforceDestinationConfig(_DestinationBase):
    type: Literal["salesforce"]
    instance_url: str | None = None
    access_token: str | None = None
    # OAuth 2.0: JWT bearer (client_id + username + private key;
    # https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm)
    # or client credentials (client_id + client_secret, My Domain login_url).
    login_url: str = "https://login.salesforce.com"
    client_id: str | None = None
    client_secret: str | None = None
    username: str | None = None
    private_key: str | None = None
    private_key_file: str | None = None
    api_version: str = Field("62.0", pattern=r"^\d+\.\d$")
    timeout_s: float = Field(30.0, gt=0, le=300)
    rate_limit: RateLimitConfig = Field(default_factory=lambda: RateLimitConfig(max_concurrency=4))
    batch_size: int = Field(200, ge=1, le=200)

    @property
    def auth_mode(self) -> str | None:
        """Which way to authenticate, from what is configured; None: no credentials (dry-run)."""
        if self.client_id and self.username and (self.private_key or self.private_key_file):
            return "jwt"
        if self.client_id and self.client_secret:
            return "client_credentials"
        if self.access_token and self.instance_url:
            return "token"
        return None


DestinationConfig = Annotated[
    Union[HubSpotDestinationConfig, SalesforceDestinationConfig], Field(discriminator="type")
]


class WorkerConfig(_Section):
    # Delivery threads inside each gunicorn worker, so `make run` does everything.
    # Switch off when standalone `connector worker` processes do the work.
    embedded: bool = True
    threads: int = Field(2, ge=1, le=64)
    batch_size: int = Field(200, ge=1, le=2000)
    poll_interval_s: float = Field(1.0, gt=0, le=60)
    lease_s: float = Field(120.0, ge=5, le=3600)
    # The durable retry schedule: exponential backoff with jitter, then `dead`.
    max_attempts: int = Field(12, ge=1, le=100)
    max_age_hours: float = Field(24.0, gt=0, le=24 * 30)
    backoff_base_s: float = Field(5.0, gt=0, le=3600)
    backoff_max_s: float = Field(3600.0, gt=0, le=86400)
    shutdown_timeout_s: float = Field(20.0, gt=0, le=600)
    # On SQLite the worker gives way to the receiver: it waits this long for the
    # write lock, then tries again on its next pass (an event must never wait for the worker).
    sqlite_lock_wait_ms: int = Field(250, ge=10, le=60_000)
    # Each running worker writes a heartbeat this often (its row in the ledger's `workers` table);
    # one not heard from for three intervals counts as gone.
    heartbeat_s: float = Field(10.0, gt=0, le=600)
    # While a destination waits for its daily API budget, how often its usage is read again (Salesforce /limits).
    budget_check_s: float = Field(300.0, gt=0, le=86400)


class RetentionConfig(_Section):
    # Finished events (every delivery delivered, skipped or stale) older than this are pruned;
    # events with a pending, retrying or dead delivery never are. The link table is kept.
    finished_days: float | None = Field(30.0, gt=0)
    prune_interval_minutes: float = Field(60.0, gt=0)
    batch_size: int = Field(1000, ge=1, le=100_000)


class StatusConfig(_Section):
    admin_password: str | None = None  # an operator's: sees everything, may replay
    viewer_password: str | None = None  # a viewer's: sees everything, changes nothing
    # How many reverse proxies stand in front of the server (a proxy on this host, a tunnel): the
    # client's address, scheme and host are then read from that many X-Forwarded-* hops, and never
    # from a forwarding header otherwise. With a proxy, the status page needs a password.
    trusted_proxies: int = Field(0, ge=0, le=5)
    # Signed-in sessions end after this long (the cookie's Max-Age).
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    # Send the session cookie only over HTTPS even when the request looked like plain HTTP (a TLS
    # proxy that is not listed in trusted_proxies). Requests that arrived over HTTPS always get it.
    cookie_secure: bool = False

    @model_validator(mode="after")
    def _viewer_needs_an_admin(self) -> StatusConfig:
        # Without an admin password the page is open to direct requests on this machine, so a viewer
        # password alone would restrict nobody: refuse it rather than let it look like protection.
        if self.viewer_password and not self.admin_password:
            raise ValueError("viewer_password is set without admin_password: set CONNECTOR_ADMIN_PASSWORD too "
                             "(without it the page is open to this machine, and the viewer password protects nothing)")
        return self


class ObservabilityConfig(_Section):
    # GET /metrics (Prometheus text format, unauthenticated like most scrape targets);
    # false answers 404, e.g. when the port is reachable from outside and metrics are not wanted.
    metrics: bool = True
    # Log lines as plain text or one JSON object per line. $LOG_FORMAT, when set, wins.
    log_format: Literal["text", "json"] = "text"


# Hosts to which the Okendo API key may travel over plain HTTP: local emulators only.
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class ReconcileConfig(_Section):
    """The worker's periodic reading of recent reviews from Okendo's API (connector.backfill.reconcile)."""

    every_minutes: float = Field(60, ge=1, le=7 * 24 * 60)
    window_days: float = Field(30, gt=0, le=3650)  # reviews created this recently are read
    statuses: list[Literal["approved", "pending", "rejected"]] = Field(
        default_factory=lambda: ["approved", "pending", "rejected"], min_length=1)


class OkendoApiConfig(_Section):
    """Okendo's Merchant REST API: `connector okendo subscribe|list|backfill`, and the workers'
    reconciliation when `reconcile` is set (otherwise the server never calls it).

    https://docs.okendo.io/merchant-rest-api: base URL https://api.okendo.io/enterprise
    (HTTPS only), HTTP Basic with the Okendo user id as the username and the 32-character
    API key as the password.
    """

    api_base_url: str = "https://api.okendo.io/enterprise"
    user_id: str | None = None
    api_key: str | None = None
    timeout_s: float = Field(15.0, gt=0, le=120)
    reconcile: ReconcileConfig | None = None  # None: no reconciliation

    @model_validator(mode="after")
    def _reconcile_needs_credentials(self) -> OkendoApiConfig:
        if self.reconcile is not None and not (self.user_id and self.api_key):
            raise ValueError("reconcile is set, so the workers read Okendo's API: set okendo.user_id and "
                             "okendo.api_key (OKENDO_USER_ID and OKENDO_API_KEY), or remove okendo.reconcile")
        return self

    @field_validator("api_base_url")
    @classmethod
    def _https_or_loopback(cls, url: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        # The API key travels in every request: plain HTTP only to this machine (a local emulator).
        if parts.scheme == "https" and parts.hostname:
            return url.rstrip("/")
        if parts.scheme == "http" and parts.hostname in _LOOPBACK_HOSTS:
            return url.rstrip("/")
        raise ValueError("must be an https:// URL such as https://api.okendo.io/enterprise "
                         "(http:// only to localhost, for a local emulator)")


class Settings(_Section):
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    mappings: MappingsConfig = Field(default_factory=MappingsConfig)
    receiver: ReceiverConfig = Field(default_factory=ReceiverConfig)
    destinations: dict[str, DestinationConfig] = Field(default_factory=dict)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    status: StatusConfig = Field(default_factory=StatusConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    okendo: OkendoApiConfig = Field(default_factory=OkendoApiConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

    # Where the file lives: relative paths in it are relative to this folder.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    source: str = Field("<defaults>", exclude=True)
    overridden: dict[str, str] = Field(default_factory=dict, exclude=True)  # key path -> the variable that set it

    def resolve_path(self, path: str | Path) -> Path:
        path = Path(path)
        return path if path.is_absolute() else self.base_dir / path


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        current = environ.get(name)
        if default is not None and not current:
            return default
        return current or ""

    return _ENV_REFERENCE.sub(replace, value)


def _interpolate_tree(node: Any, environ: Mapping[str, str], path: tuple[str, ...], errors: list[str]) -> Any:
    if isinstance(node, dict):
        result = {}
        for key, value in node.items():
            interpolated = _interpolate_tree(value, environ, (*path, str(key)), errors)
            # `key: ${UNSET}` counts as not written, so the key's default applies.
            if interpolated is None and value is not None:
                continue
            result[key] = interpolated
        return result
    if isinstance(node, list):
        return [_interpolate_tree(value, environ, (*path, str(i)), errors) for i, value in enumerate(node)]
    if path and path[-1] in SECRET_KEYS and node not in (None, "", []):
        if not (isinstance(node, str) and _PURE_ENV_REFERENCE.match(node)):
            errors.append(
                f"{'.'.join(path)}: secrets are only read from the environment; "
                f"write `{path[-1]}: ${{SOME_VARIABLE}}` and set that variable"
            )
            return None
    if isinstance(node, str):
        result = interpolate(node, environ)
        # A value that was only a reference to an unset variable means "not set".
        if result == "" and _PURE_ENV_REFERENCE.match(node):
            return None
        return result
    return node


def _format_validation_error(error: ValidationError, source: str,
                             overrides: Mapping[tuple[str, ...], tuple[str, Any]] | None = None) -> str:
    lines = [f"{source} is not valid:"]
    set_by = {path: name for path, (name, _) in (overrides or {}).items()}
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        variable = next((name for path, name in set_by.items()
                         if tuple(map(str, item["loc"]))[:len(path)] == path), None)
        if variable:
            location += f" (set by {variable})"
        message = item["msg"].removeprefix("Value error, ")
        show_input = item["type"] not in ("missing", "extra_forbidden") and not (
            set(map(str, item["loc"])) & SECRET_KEYS
        )
        suffix = f" (got {item['input']!r})" if show_input and not isinstance(item["input"], (dict, list)) else ""
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling and indentation)"
        lines.append(f"  {location}: {message}{suffix}")
    return "\n".join(lines)


def settings_from_mapping(
    data: Mapping[str, Any] | None,
    *,
    environ: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    source: str = "<config>",
) -> Settings:
    """Validate an already-parsed config tree (a YAML document or a test's dict)."""
    environ = os.environ if environ is None else environ
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source} must be a mapping of sections (database, receiver, ...), not {type(data).__name__}")
    errors: list[str] = []
    tree = _interpolate_tree(dict(data), environ, (), errors)
    overrides = config_overrides.env_overrides(environ)
    errors += config_overrides.apply(tree, overrides)
    if errors:
        raise ConfigError(f"{source} is not valid:\n" + "\n".join(f"  {line}" for line in errors))
    try:
        settings = Settings.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, source, overrides)) from None
    settings.overridden = {".".join(path): name for path, (name, _) in overrides.items()}
    settings.base_dir = base_dir or Path.cwd()
    settings.source = source
    return settings


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get(CONFIG_PATH_ENV) or DEFAULT_CONFIG_PATH)


def load_settings(path: str | Path | None = None, *, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, interpolate and validate a config file (default: $CONNECTOR_CONFIG or ./config.yaml)."""
    path = Path(path) if path is not None else config_path(environ)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found; create it (copy config.yaml from the project) "
            f"or point {CONFIG_PATH_ENV} at it"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read config file: {error}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from None
    return settings_from_mapping(data, environ=environ, base_dir=path.resolve().parent, source=str(path))
