"""Logging: plain text or one JSON object per line, with ids on every record, and no secrets.

- `configure_logging()` sets up the CLI's and the app's logging (like
  `logging.basicConfig`, it leaves handlers that are already there alone: under
  gunicorn, `gunicorn.conf.py`'s `logconfig_dict` built from `logging_config_dict()`
  owns the handlers, and `configure_logging` then only learns the app's secrets).
- `JsonFormatter` writes `ts`, `level`, `logger`, `message`, `process`, `thread`,
  the ids passed with `extra=` (`event_id`, `delivery_id`, `message_id`,
  `destination`, ...) and `exception`.
- `RedactingFilter` sits on every handler and rewrites the message, the extra
  fields and the traceback of each record: `whsec_...` signing secrets, Bearer
  tokens, PEM private keys, `access_token=...`-style pairs, Salesforce session
  ids and every secret the configuration holds become `[REDACTED]`.

`LOG_FORMAT=json` (or `observability.log_format: json`) switches to JSON;
`LOG_LEVEL` sets the level (default INFO).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import IO, Any

from connector.config import SECRET_KEYS, Settings

REDACTED = "[REDACTED]"

# Environment variables that hold credentials (README's table), redacted even before any config is read.
SECRET_ENV_VARS = (
    "OKENDO_WEBHOOK_SECRETS",
    "HUBSPOT_ACCESS_TOKEN",
    "SALESFORCE_ACCESS_TOKEN",
    "SALESFORCE_CLIENT_SECRET",
    "SALESFORCE_PRIVATE_KEY",
    "CONNECTOR_ADMIN_PASSWORD",
    "CONNECTOR_SESSION_KEY",
    "OKENDO_API_KEY",
)
# Shorter literal values are not redacted: a two-letter "secret" would blank out half the log.
MIN_SECRET_LENGTH = 4

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Svix signing secrets: whsec_ + base64 (a bare "whsec_", as in advice naming the prefix, is no secret).
    (re.compile(r"whsec_[A-Za-z0-9+/=_-]{8,}"), REDACTED),
    # Authorization: Bearer <token> (and "bearer" in any case).
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/!]{12,}=*"), r"\1 " + REDACTED),
    # PEM private keys (Salesforce JWT bearer flow).
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S), REDACTED),
    # key=value / "key": "value" pairs of OAuth requests and answers.
    (re.compile(r"(?i)(\b(?:access_token|refresh_token|client_secret|assertion|password|session_?id)\b[\"']?\s*[:=]\s*[\"']?)"
                r"[^\"'&\s,;}]+"), r"\1" + REDACTED),
    # Salesforce session ids / access tokens: 00D<org id>!<token>.
    (re.compile(r"\b00D[A-Za-z0-9]{12,15}![A-Za-z0-9._-]+"), REDACTED),
)
# What every pattern above needs to find in a text before it can match: one search tells that most
# texts (ids, states, counts) hold nothing to redact, instead of one search per pattern.
_MAY_MATCH = re.compile(r"whsec_|-----BEGIN |00D|(?i:bearer|access_token|refresh_token|client_secret|assertion"
                        r"|password|session_?id)")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName", "_connector_redacted"}


# --- the secrets to redact ---------------------------------------------------------------------

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secrets_version = 0  # counts the changes to _secrets
_secret_pattern: tuple[frozenset[str], re.Pattern[str] | None, int] = (frozenset(), None, -1)


def register_secrets(values: Iterable[str | None]) -> None:
    """Redact these literal values from every log record from now on."""
    global _secrets_version
    with _secrets_lock:
        for value in values:
            if not isinstance(value, str):
                continue
            for candidate in (value.strip(), value.strip().removeprefix("whsec_")):
                if len(candidate) >= MIN_SECRET_LENGTH and candidate not in _secrets:
                    _secrets.add(candidate)
                    _secrets_version += 1


def settings_secrets(settings: Settings) -> list[str]:
    """Every credential a configuration holds (the values of its secret keys, wherever they are)."""
    found: list[str] = []

    def walk(node: Any, key: str | None) -> None:
        if isinstance(node, Mapping):
            for child_key, child in node.items():
                walk(child, str(child_key))
        elif isinstance(node, (list, tuple)):
            for child in node:
                walk(child, key)
        elif isinstance(node, str) and key in SECRET_KEYS:
            found.append(node)

    walk(settings.model_dump(), None)
    return found


def environment_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    environ = os.environ if environ is None else environ
    found = []
    for name in SECRET_ENV_VARS:
        value = environ.get(name)
        if value:
            found.append(value)
            if name == "OKENDO_WEBHOOK_SECRETS":  # several, during a rotation
                found.extend(part for part in re.split(r"[\s,]+", value) if part)
    return found


def _literal_pattern() -> re.Pattern[str] | None:
    global _secret_pattern
    if _secret_pattern[2] == _secrets_version:  # the common case, without the lock or a copy of the set
        return _secret_pattern[1]
    with _secrets_lock:
        version = _secrets_version
        # Longest first, so a secret containing another is redacted whole.
        alternatives = sorted(_secrets, key=len, reverse=True)
        compiled = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None
        _secret_pattern = (frozenset(alternatives), compiled, version)
        return compiled


def redact(text: str) -> str:
    """`text` with every secret it contains replaced by [REDACTED]."""
    literal = _literal_pattern()
    if literal is not None:
        text = literal.sub(REDACTED, text)
    if _MAY_MATCH.search(text):
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {key: _redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(item) for item in value]
    return redact(str(value))


class RedactingFilter(logging.Filter):
    """Put it on every handler: it renders each record's message (and traceback) and redacts it."""

    def __init__(self, name: str = ""):
        super().__init__(name)
        # Credentials in the environment are known from the first record on (gunicorn's
        # master builds this filter from logconfig_dict; its workers inherit what it knows).
        register_secrets(environment_secrets())

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_connector_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what there is, still redacted
            message = f"{record.msg!r} % {record.args!r}"
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            # The access log's atoms as fields of their own (redacted below like every extra).
            for name, value in _access_fields(record.args).items():
                setattr(record, name, value)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD_ATTRIBUTES:
                setattr(record, name, _redact_value(value))
        record._connector_redacted = True
        return True


# --- formatters --------------------------------------------------------------------------------

TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, process, thread, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD_ATTRIBUTES and not name.startswith("_"):
                entry[name] = _jsonable(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


def _access_fields(atoms: Mapping[str, Any]) -> dict[str, Any]:
    """gunicorn's access-log atoms as fields a log tool can query
    (https://docs.gunicorn.org/en/stable/settings.html#access-log-format): D is microseconds."""
    fields: dict[str, Any] = {"method": atoms.get("m"), "path": atoms.get("U"), "query": atoms.get("q") or None,
                              "remote": atoms.get("h"), "user_agent": atoms.get("a")}
    for name, atom in (("status", "s"), ("bytes", "B")):
        try:
            fields[name] = int(atoms.get(atom))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass
    try:
        fields["duration_ms"] = round(int(atoms.get("D")) / 1000, 3)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        pass
    return {name: value for name, value in fields.items() if value is not None}


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def log_format(settings: Settings | None = None, environ: Mapping[str, str] | None = None) -> str:
    """json or text: $LOG_FORMAT, else observability.log_format, else text."""
    environ = os.environ if environ is None else environ
    chosen = (environ.get("LOG_FORMAT") or "").strip().lower()
    if chosen in ("json", "text"):
        return chosen
    if settings is not None:
        return settings.observability.log_format
    return "text"


def make_formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


# --- setting it up -----------------------------------------------------------------------------


_INSTALLED = "_connector_installed"


def _ours(handler: logging.Handler) -> bool:
    return any(isinstance(f, RedactingFilter) for f in handler.filters)


def configure_logging(settings: Settings | None = None, *, level: str | int | None = None,
                      fmt: str | None = None, stream: IO[str] | None = None, force: bool = False) -> None:
    """Set up logging for the CLI or the app: call it where `logging.basicConfig` was.

    Always: learn the secrets to redact (from `settings` and the environment).
    Then, like basicConfig, only when the root logger has no handlers yet (or
    `force`): one stderr handler with the text or JSON formatter and the
    redacting filter, at `level` ($LOG_LEVEL, default INFO). A later call
    with the settings switches that handler to their `log_format` (unless
    $LOG_FORMAT says otherwise). Handlers set up elsewhere are left as they
    are, except that the redacting filter is added to them: under gunicorn
    the logconfig_dict has set them up already. Safe to call more than once.
    """
    register_secrets(environment_secrets())
    if settings is not None:
        register_secrets(settings_secrets(settings))
    root = logging.getLogger()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if root.handlers and not force:
        for handler in root.handlers + logging.getLogger("connector").handlers:
            if getattr(handler, _INSTALLED, False):
                if fmt is not None or settings is not None:
                    handler.setFormatter(make_formatter(fmt or log_format(settings)))
            elif not _ours(handler):
                handler.addFilter(RedactingFilter())
        return
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(fmt or log_format(settings)))
    handler.addFilter(RedactingFilter())
    setattr(handler, _INSTALLED, True)
    root.addHandler(handler)
    root.setLevel(level or os.environ.get("LOG_LEVEL", "INFO").upper())


def logging_config_dict(level: str = "info", fmt: str | None = None,
                        settings: Settings | None = None) -> dict[str, Any]:
    """gunicorn's `logconfig_dict`: app logs on stderr, access log on stdout, both through the redacting filter."""
    fmt = fmt or log_format(settings)
    level = level.upper()
    if fmt == "json":
        formatters: dict[str, Any] = {"plain": {"()": "connector.logs.JsonFormatter"},
                                      "access": {"()": "connector.logs.JsonFormatter"}}
    else:
        formatters = {"plain": {"format": TEXT_FORMAT}, "access": {"format": "%(message)s"}}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "connector.logs.RedactingFilter"}},
        "formatters": formatters,
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr",
                       "filters": ["redact"]},
            "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout",
                       "filters": ["redact"]},
        },
        "root": {"level": "WARNING", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
            "connector": {"level": level, "handlers": ["stderr"], "propagate": False},
            "alembic": {"level": "WARNING"},
        },
    }
