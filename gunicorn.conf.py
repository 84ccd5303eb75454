"""gunicorn settings of a checkout, `gunicorn -c gunicorn.conf.py`: the ones shipped in the package
(connector/gunicorn_conf.py, which `connector serve` uses), so both serve alike.

The shipped file is executed here, not imported: importing anything under `connector` would load
prometheus_client before those settings choose the multiprocess metrics folder, and gunicorn
re-reads this file at every reload (kill -HUP), which a cached import would not follow.
"""

import importlib.util
from pathlib import Path

# find_spec of the top-level package locates it without running its __init__.
_SHIPPED = Path(importlib.util.find_spec("connector").submodule_search_locations[0]) / "gunicorn_conf.py"
exec(compile(_SHIPPED.read_text(encoding="utf-8"), str(_SHIPPED), "exec"))
