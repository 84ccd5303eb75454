"""okendo-crm-connector: Okendo webhooks (via Svix) into Salesforce and HubSpot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connector.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # `from connector import create_app` imports the app (flask, sqlalchemy) only when it is asked
    # for, so `connector --help` and the other commands that need no app start fast
    # (module __getattr__: https://peps.python.org/pep-0562/).
    if name == "create_app":
        from connector.app import create_app

        return create_app
    raise AttributeError(f"module 'connector' has no attribute {name!r}")
