"""Getting started: subscribe Okendo to the connector, post signed test events, check a setup.

One module per job: `okendo_api` (Okendo's Merchant REST API client), `topics` (which events
to subscribe), `samples` (the bodies `connector send` posts), `signed_post` (sign as Svix does
and post), `doctor` (the checks of `connector doctor`). The CLI commands in `commands.py`
only parse options and print.
"""
