"""What one app instance holds: settings, ledger engine and intake, signature verifier and mappings."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Engine

from connector.config import Settings
from connector.ledger.intake import EventIntake
from connector.mapping.engine import MappingSet
from connector.receiver.signature import SignatureVerifier

EXTENSION_KEY = "connector"


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    verifier: SignatureVerifier
    mappings: MappingSet
    intake: EventIntake  # stores verified webhooks, several requests per commit

    def close(self, timeout: float = 10.0) -> None:
        """Store what the intake holds, then give every ledger connection back."""
        self.intake.close(timeout)
        self.engine.dispose()


def runtime() -> Runtime:
    return current_app.extensions[EXTENSION_KEY]
