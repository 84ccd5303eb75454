"""The ingest baseline: a bare Flask app that answers 200 to any POST and does nothing else.

Served by the same gunicorn configuration as the connector (`gunicorn -c gunicorn.conf.py
bench.baseline:app`), so the ratio between the two is what the connector's own work costs:
body read, signature check, parsing, the durable insert and the answer.
"""

from flask import Flask, request

app = Flask(__name__)


@app.post("/webhooks/okendo")
def accept():
    request.get_data()  # read the body as the connector does; a server must drain it anyway
    return "", 200
