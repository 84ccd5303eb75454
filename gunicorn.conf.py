"""gunicorn settings for the connector: `gunicorn -c gunicorn.conf.py`.

Environment: BIND (default 127.0.0.1:8000), WEB_CONCURRENCY (worker processes,
default 2), GUNICORN_THREADS (threads per worker, default 4).
"""

import os

wsgi_app = "wsgi:app"
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


def on_starting(server):
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
    from connector.serving import stop_embedded_worker

    stop_embedded_worker(server.cfg.graceful_timeout)


# Bound request lines and headers (the body is bounded by receiver.max_body_bytes).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

# gunicorn replaces its logging defaults section by section with this, so it is complete.
_level = loglevel.upper()
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"},
        "access": {"format": "%(message)s"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
        "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
    },
    "root": {"level": "WARNING", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": _level, "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        "connector": {"level": _level, "handlers": ["stderr"], "propagate": False},
    },
}
