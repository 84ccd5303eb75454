"""Okendo sample webhook bodies, one per topic, shipped with the package.

Synthetic values in the shape of Okendo's documented webhook payloads
(https://docs.okendo.io/webhooks/topics). Used by the tests and
by `connector send` to post signed examples from any checkout.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_paths() -> list[Path]:
    folder = Path(str(resources.files(__name__)))
    return sorted(folder.glob("*.json"))


def sample_bytes(event_name: str) -> bytes:
    """The raw body of a sample, e.g. `review.create`."""
    return (Path(str(resources.files(__name__))) / f"{event_name}.json").read_bytes()
