"""What one app instance holds: its settings, ledger engine and signature verifier."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Engine

from connector.config import Settings
from connector.receiver.signature import SignatureVerifier

EXTENSION_KEY = "connector"


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    verifier: SignatureVerifier


def runtime() -> Runtime:
    return current_app.extensions[EXTENSION_KEY]
