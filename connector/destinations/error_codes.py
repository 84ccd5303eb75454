"""What the operator does about a CRM's error code: the table in error_codes.yaml (data, not code),
read once and checked, so a broken edit names the file and the key instead of showing nothing."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

TABLE = Path(__file__).with_name("error_codes.yaml")
KINDS = ("hubspot", "salesforce")


@dataclass(frozen=True)
class Advice:
    code: str
    means: str
    do: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "means": self.means, "do": self.do}


def load(path: Path = TABLE) -> dict[str, dict[str, Advice]]:
    """The table by destination kind and code; ValueError naming the file and key when it is malformed."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict) or set(raw) - set(KINDS):
        raise ValueError(f"{path}: the top-level keys must be {' and '.join(KINDS)}")
    table: dict[str, dict[str, Advice]] = {}
    for kind, codes in raw.items():
        if not isinstance(codes, dict):
            raise ValueError(f"{path}: {kind} must map error codes to {{means, do}}")
        table[kind] = {}
        for code, entry in codes.items():
            if not isinstance(entry, dict) or not all(isinstance(entry.get(key), str) and entry[key].strip()
                                                      for key in ("means", "do")):
                raise ValueError(f"{path}: {kind}.{code} needs a `means` and a `do` text")
            table[kind][str(code)] = Advice(str(code), entry["means"].strip(), entry["do"].strip())
    return table


@lru_cache(maxsize=1)
def _table() -> dict[str, dict[str, Advice]]:
    return load()


def advice(kind: str | None, code: str | None) -> Advice | None:
    """What to do about `code` from a destination of `kind` (unknown kind: either CRM's entry)."""
    if not code:
        return None
    kinds = (kind,) if kind in KINDS else KINDS
    return next((_table()[k][code] for k in kinds if code in _table().get(k, {})), None)
