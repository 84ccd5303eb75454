"""The WSGI application gunicorn serves: `connector.wsgi:app` (see connector/gunicorn_conf.py).

Imported in each gunicorn worker after the fork, so it takes the configuration the master last
validated (at start or at a reload) instead of reading config.yaml again.
"""

from connector import create_app
from connector.serving import worker_configuration

_configuration = worker_configuration()
app = create_app(_configuration.settings, mappings=_configuration.mappings)
