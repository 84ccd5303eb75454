"""gunicorn settings for the connector, shipped in the package: `connector serve` runs gunicorn with
this file (`gunicorn -c .../connector/gunicorn_conf.py`); in a checkout, the root gunicorn.conf.py
executes it.

gunicorn reads it as a config *file*, never as an import (`python:connector.gunicorn_conf`): an
import would load the `connector` package, and with it prometheus_client, before this file chooses
the multiprocess metrics folder, and Python would cache it, where gunicorn re-reads its file on
every reload (kill -HUP). https://docs.gunicorn.org/en/stable/configure.html#configuration-file

Environment: BIND (default 127.0.0.1:8000), CONNECTOR_PIDFILE (default data/gunicorn.pid
beside the config file), WEB_CONCURRENCY (worker processes,
default 2), GUNICORN_THREADS (threads per worker, default 4), LOG_LEVEL (info),
LOG_FORMAT (text or json; default observability.log_format), PROMETHEUS_MULTIPROC_DIR
(where the workers' metrics meet; default: a fresh folder under the temp dir,
removed at exit).
"""

import glob
import os
import shutil
import tempfile

# /metrics adds up every worker's counters through files in this folder. It must be
# in the environment before prometheus_client is first imported (below, by connector)
# and before workers fork. Set once per server: a reload re-reads this file and keeps it.
_METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
_METRICS_DIR_OWNED_ENV = "CONNECTOR_METRICS_DIR_CREATED"
if not os.environ.get(_METRICS_DIR_ENV):
    os.environ[_METRICS_DIR_ENV] = tempfile.mkdtemp(prefix="okendo-connector-metrics-")
    os.environ[_METRICS_DIR_OWNED_ENV] = os.environ[_METRICS_DIR_ENV]

wsgi_app = "connector.wsgi:app"
bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# Okendo (through Svix) gives up on an attempt after 15 s; we answer in milliseconds.
timeout = 30
graceful_timeout = 20
keepalive = 5
# Each worker opens its own ledger connections after the fork.
preload_app = False
accesslog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")


def _pidfile():
    # `connector reload` (and systemd's ExecReload) find the master here: a signal meant for
    # gunicorn must not reach the shell or `make` that started it.
    from connector.serving import pidfile_path

    path = pidfile_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


pidfile = _pidfile()


def _prepare_metrics_dir():
    # Start from zero: values left by an earlier server with this folder would be added in.
    # Only the metric files are removed: the folder may be one the operator chose.
    path = os.environ[_METRICS_DIR_ENV]
    os.makedirs(path, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):
        os.remove(stale)


def on_starting(server):
    _prepare_metrics_dir()
    server.log.info("prometheus multiprocess metrics in %s", os.environ[_METRICS_DIR_ENV])
    # Validate config.yaml and the mappings once, in the master, before any worker starts.
    from connector.serving import validate_at_start

    validate_at_start(server.log)


def on_reload(server):
    # kill -HUP: adopt edits only if they validate; workers inherit the result.
    from connector.serving import revalidate_on_reload

    revalidate_on_reload(server.log)


def post_worker_init(worker):
    # Delivery threads run inside each gunicorn worker (worker.embedded in config.yaml).
    from connector.serving import start_embedded_worker

    start_embedded_worker(worker)


def worker_exit(server, worker):
    from connector.serving import close_ledger, stop_embedded_worker

    stop_embedded_worker(server.cfg.graceful_timeout)
    close_ledger(worker, timeout=5)


def child_exit(server, worker):
    # In the master, after a worker is gone: its counters stay in the sum, its live gauges go.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    # Remove the metrics folder this file created (never one the operator chose).
    owned = os.environ.get(_METRICS_DIR_OWNED_ENV)
    if owned and owned == os.environ.get(_METRICS_DIR_ENV):
        shutil.rmtree(owned, ignore_errors=True)


# No control socket (gunicorn 25.1+ opens one by default, at one path per user, so a second server
# of the same user would take it over): the connector is reloaded through the pidfile and stopped
# with SIGTERM. https://gunicorn.org/reference/settings/ (control_socket_disable)
control_socket_disable = True

# Bound request lines and headers (the body is bounded by receiver.max_body_bytes).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

# gunicorn replaces its logging defaults section by section with this, so it is complete.
# Every handler redacts secrets; LOG_FORMAT=json (or observability.log_format: json) for JSON lines.


def _log_format():
    from connector.logs import log_format

    if os.environ.get("LOG_FORMAT"):
        return log_format()
    try:
        from connector.config import load_settings

        return log_format(load_settings())
    except Exception:  # an invalid config: on_starting reports it and stops
        return "text"


def _logconfig_dict():
    from connector.logs import logging_config_dict

    return logging_config_dict(level=loglevel, fmt=_log_format())


logconfig_dict = _logconfig_dict()
