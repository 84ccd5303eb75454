"""Configuration for gunicorn's master and workers, with safe reloads.

The master validates config.yaml and the mappings before any worker starts
(`on_starting`) and again on `kill -HUP` (`on_reload`). Workers are forked
from the master, so they inherit the last configuration that validated: an
edit that does not validate is refused with its error, and the running
mappings stay in force instead of every new worker failing to boot.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from connector.config import CONFIG_PATH_ENV, ConfigError, Settings, config_path, load_settings
from connector.mapping.engine import MappingSet
from connector.mapping.loader import load_mappings
from connector.worker.remote_check import loaded_at, mark_loaded, start_in_background

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Configuration:
    settings: Settings
    mappings: MappingSet


_last_good: Configuration | None = None


def load_configuration() -> Configuration:
    """Read and validate config.yaml and every mapping it names (raises ConfigError)."""
    settings = load_settings()
    return Configuration(settings=settings, mappings=load_mappings(settings))


def validate_at_start(logger: logging.Logger = log) -> None:
    """gunicorn `on_starting`: refuse to start on an invalid configuration."""
    global _last_good
    try:
        _last_good = load_configuration()
    except ConfigError as error:
        logger.error("cannot start, the configuration is invalid:\n%s", error)
        raise SystemExit(1) from None
    # One status-page session key for every worker forked from this master.
    os.environ.setdefault("CONNECTOR_SESSION_KEY", secrets.token_hex(32))
    mark_loaded()  # the workers about to fork run the remote check of this configuration once
    logger.info("configuration valid: %d mapping(s) from %s", len(_last_good.mappings.mappings), _last_good.settings.source)


def revalidate_on_reload(logger: logging.Logger = log) -> bool:
    """gunicorn `on_reload`: adopt the edited configuration only if it validates."""
    global _last_good
    try:
        candidate = load_configuration()
    except ConfigError as error:
        logger.error("configuration edit refused; the running configuration stays in force:\n%s", error)
        return False
    _last_good = candidate
    mark_loaded()
    logger.info("configuration reloaded: %d mapping(s) from %s", len(candidate.mappings.mappings), candidate.settings.source)
    return True


PIDFILE_ENV = "CONNECTOR_PIDFILE"


def pidfile_path(config: str | os.PathLike[str] | None = None) -> Path:
    """Where gunicorn's master writes its pid, so a reload reaches it and nothing else:
    $CONNECTOR_PIDFILE, else data/gunicorn.pid beside the config file (as the SQLite ledger)."""
    if os.environ.get(PIDFILE_ENV):
        return Path(os.environ[PIDFILE_ENV])
    return config_path(None if config is None else {CONFIG_PATH_ENV: str(config)}).resolve().parent / "data" / "gunicorn.pid"


def reload_configuration(current: Configuration, config: str | os.PathLike[str] | None,
                         logger: logging.Logger = log) -> Configuration:
    """A standalone worker's SIGHUP: the edited configuration if it validates, else the running one,
    exactly as the web master decides (`revalidate_on_reload`)."""
    try:
        settings = load_settings(config)
        candidate = Configuration(settings=settings, mappings=load_mappings(settings))
    except ConfigError as error:
        logger.error("configuration edit refused; the running configuration stays in force:\n%s", error)
        return current
    logger.info("configuration reloaded: %d mapping(s) from %s", len(candidate.mappings.mappings), settings.source)
    return candidate


def worker_configuration() -> Configuration:
    """In a gunicorn worker: the master's last valid configuration; elsewhere, read it now."""
    return _last_good if _last_good is not None else load_configuration()


# --- delivery threads inside gunicorn workers -------------------------------------------------

_embedded = None


def start_embedded_worker(gunicorn_worker) -> None:  # type: ignore[no-untyped-def]
    """gunicorn `post_worker_init`: start delivery threads in this worker, unless config says not to,
    and the remote check of each CRM in the background.

    Every gunicorn worker, like every `connector worker`, draws on each CRM account's one rate limit
    through the ledger, so the whole deployment stays under it.
    """
    global _embedded
    from connector.runtime import EXTENSION_KEY
    from connector.worker.runner import Worker

    # Another WSGI app served with this gunicorn.conf.py (a benchmark baseline) has no runtime.
    runtime = getattr(gunicorn_worker.wsgi, "extensions", {}).get(EXTENSION_KEY)
    if runtime is None:
        return
    # What the mappings write that a CRM lacks, once per configuration load (the first worker to ask).
    start_in_background(runtime.settings, runtime.mappings, runtime.engine, loaded_at())
    if not runtime.settings.worker.embedded:
        # No delivery worker here, but this process's 503s must be counted, and "no live worker" can only
        # be told by a process that is not a worker: the web server's own alert loop does both.
        _start_web_alerts(runtime)
        return
    _embedded = Worker(runtime.settings, runtime.mappings, runtime.engine, kind="embedded").start()


_web_alerts = None


def _start_web_alerts(runtime) -> None:  # type: ignore[no-untyped-def]
    global _web_alerts
    from connector.alerts.loop import AlertLoop
    from connector.worker.runner import worker_engine, worker_name

    if runtime.settings.alerts.enabled:
        # On SQLite, an engine that waits only briefly for the write lock: the receiver goes first.
        engine = worker_engine(runtime.engine, runtime.settings)
        _web_alerts = AlertLoop(runtime.settings, engine, f"web:{worker_name()}").start()


def close_ledger(gunicorn_worker, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """gunicorn `worker_exit`, after the delivery threads: the intake stores what it holds and the
    ledger's connections are given back, so no write of this worker outlives it half-done."""
    from connector.runtime import EXTENSION_KEY

    # A worker that failed to boot has no app (worker_exit runs for it too).
    runtime = getattr(getattr(gunicorn_worker, "wsgi", None), "extensions", {}).get(EXTENSION_KEY)
    if runtime is not None:
        runtime.close(timeout)


def stop_embedded_worker(graceful_timeout: float) -> None:
    """gunicorn `worker_exit`: finish or give back the current batches before gunicorn's own deadline."""
    global _embedded, _web_alerts
    if _web_alerts is not None:
        _web_alerts.stop(timeout=max(graceful_timeout - 5, 1))
        _web_alerts = None
    if _embedded is None:
        return
    _embedded.stop(timeout=max(min(_embedded.config.shutdown_timeout_s, graceful_timeout - 5), 1))
    _embedded = None
