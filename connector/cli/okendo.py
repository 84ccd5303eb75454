"""`connector okendo`: the subscription commands (connector/onboarding/commands.py) with `okendo backfill`
(connector/backfill/commands.py) joined under them."""

from __future__ import annotations

from connector.backfill.commands import backfill
from connector.onboarding.commands import okendo

okendo.add_command(backfill)  # connector okendo backfill ...

__all__ = ["okendo"]
