"""What the figures were measured on: they only mean something next to the machine."""

from __future__ import annotations

import os
import platform
import sqlite3

import psutil
import sqlalchemy as sa


def _postgres_version(url: str) -> str:
    try:
        engine = sa.create_engine(sa.engine.make_url(url).set(drivername="postgresql+psycopg"))
        with engine.connect() as connection:
            version = connection.exec_driver_sql("SHOW server_version").scalar_one()
        engine.dispose()
        return str(version)
    except sa.exc.SQLAlchemyError as error:
        return f"unreachable ({error.__class__.__name__})"


def describe_machine(postgres_url: str | None) -> dict[str, str]:
    return {
        "cpus": str(os.cpu_count()),
        "cpu_model": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                           if line.startswith("model name")), platform.processor() or "unknown")
        if os.path.exists("/proc/cpuinfo") else platform.processor() or "unknown",
        "memory_gib": f"{psutil.virtual_memory().total / 2**30:.0f}",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": _postgres_version(postgres_url) if postgres_url else "not measured",
    }
