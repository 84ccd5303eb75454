/* Live updates of the status page: the overview and the events list change in place.
 *
 * Conditional polling, not Server-Sent Events: every 2 s the page asks its JSON endpoint
 * (connector/status/live.py) with If-None-Match; the server answers 304 when nothing changed,
 * or the page's content, whose [data-live-region] parts replace the open page's. An SSE stream
 * would hold one of gunicorn's few threads per open tab for as long as the tab is open.
 * Polling stops while the tab is hidden and resumes (at once) when it is shown again
 * (https://developer.mozilla.org/en-US/docs/Web/API/Document/visibilityState).
 * No eval, no inline script: it runs under the page's script-src 'self'.
 */
(function () {
  "use strict";
  var main = document.querySelector("main[data-live]");
  if (!main || !window.fetch || !window.DOMParser) { return; }
  var url = main.getAttribute("data-live");
  var every = 2000;
  var etag = null;
  var timer = null;
  var busy = false;
  var note = document.querySelector("[data-live-indicator]");

  function say(text, failed) {
    if (!note) { return; }
    note.textContent = text;
    note.classList.toggle("failed", !!failed);
  }

  function clock() {
    return new Date().toISOString().slice(11, 19) + " UTC";
  }

  // A region the person is working in (typing a pause reason, a focused button) is left as it is.
  function inUse(region) {
    var active = document.activeElement;
    return active && active !== document.body && region.contains(active);
  }

  function apply(html) {
    var fresh = new DOMParser().parseFromString("<!doctype html><body>" + html, "text/html");
    document.querySelectorAll("[data-live-region]").forEach(function (region) {
      var name = region.getAttribute("data-live-region");
      var next = fresh.querySelector('[data-live-region="' + name + '"]');
      if (!next || inUse(region)) { return; }
      region.replaceWith(document.adoptNode(next));
    });
  }

  function schedule(delay) {
    clearTimeout(timer);
    timer = null;
    if (document.visibilityState === "visible") { timer = setTimeout(poll, delay); }
  }

  function poll() {
    if (busy) { return; }
    busy = true;
    var headers = { "Accept": "application/json" };
    if (etag) { headers["If-None-Match"] = etag; }
    fetch(url, { headers: headers, cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (response.status === 304) { return null; }
        if (response.status === 401) {
          // Signed out (the session expired): reloading shows the sign-in page, which does not poll.
          window.location.reload();
          return null;
        }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        etag = response.headers.get("ETag");
        return response.json();
      })
      .then(function (data) {
        if (data) {
          if (data.poll_every_ms) { every = data.poll_every_ms; }
          apply(data.html);
        }
        say("Live: checked at " + clock() + ", every " + Math.round(every / 1000) + " s while this tab is shown.", false);
      })
      .catch(function (error) {
        say("Live updates stopped working (" + error.message + "); trying again. Reload the page if this lasts.", true);
      })
      .then(function () {
        busy = false;
        schedule(every);
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") { schedule(0); } else { clearTimeout(timer); timer = null; }
  });
  schedule(every);
})();
