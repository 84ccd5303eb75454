"""Live updates of the overview and the events list: what live.js polls.

Conditional polling rather than Server-Sent Events: gunicorn runs gthread workers with a few
threads each (connector/gunicorn_conf.py), and an SSE stream holds one of those threads for as
long as a tab stays open, so a handful of open tabs would starve the webhook endpoint. A poll
holds a thread for the milliseconds of one indexed query and is answered 304 Not Modified
when nothing changed (https://developer.mozilla.org/en-US/docs/Web/HTTP/Conditional_requests;
https://docs.gunicorn.org/en/stable/design.html#how-many-threads).

Each endpoint renders the page's own view in fragment mode (base.html outputs the content
block alone), so the live page and the reloaded page can never differ; the ETag is a hash of
that fragment with its CSRF tokens left out (they are re-signed on every request, whatever else
changed). The routes join the `status` blueprint, like the other status routes, behind the same
authentication.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

from flask import g, jsonify, request

from connector.status import views
from connector.status.auth import require_auth
from connector.status.views import bp

# How often the page asks, in milliseconds; the page reads it from its data-live-every attribute.
POLL_EVERY_MS = 2000
_CSRF_TOKEN = re.compile(r'name="csrf_token" value="[^"]*"')


def fragment(view: Callable[[], Any]) -> Any:
    """The view's content block as JSON {"html": ...}, or 304 when the browser's copy is current."""
    g.live_fragment = True
    html = view()
    if not isinstance(html, str):  # a redirect or an error answer: passed on as it is
        return html
    digest = hashlib.sha256(_CSRF_TOKEN.sub("", html).encode()).hexdigest()[:32]
    response = jsonify(html=html, poll_every_ms=POLL_EVERY_MS)
    response.set_etag(digest)
    # Always asked again (no-cache means revalidate, not "do not store"); never kept by a proxy.
    response.headers["Cache-Control"] = "no-cache, private"
    return response.make_conditional(request)


@bp.get("/live/overview")
@require_auth(api=True)
def live_overview() -> Any:
    return fragment(views.overview)


@bp.get("/live/events")
@require_auth(api=True)
def live_events() -> Any:
    """The events list with the same filters as the page (its query string)."""
    return fragment(views.events)
