"""WSGI entry point of a checkout, `gunicorn wsgi:app`: the package's own, connector/wsgi.py."""

from connector.wsgi import app

__all__ = ["app"]
