"""WSGI entry point: `gunicorn wsgi:app` (see gunicorn.conf.py)."""

from connector import create_app
from connector.serving import worker_configuration

_configuration = worker_configuration()
app = create_app(_configuration.settings, mappings=_configuration.mappings)
