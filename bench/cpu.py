"""Where a benchmark's CPU went: the whole machine, and the processes of each part (the connector's
workers, PostgreSQL's server, the benchmark's own process with the CRM emulators).

A drain that is bound by the CRMs' rate limit leaves the CPUs partly idle; one that is bound by the
CPUs keeps them busy, and then its time says how much CPU an event costs, not how well the limit is
used. The report prints both, so a missed target says which of the two it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psutil

Processes = Callable[[], Iterable[psutil.Process]]


def _busy_seconds() -> float:
    """CPU time spent working on this machine (Linux's guest time is already inside user and nice)."""
    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))


def _stolen_seconds() -> float:
    """Time the hypervisor ran someone else on this VM's CPUs (0 on bare metal)."""
    return getattr(psutil.cpu_times(), "steal", 0.0)


def _process_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def postgres_processes() -> list[psutil.Process]:
    """The PostgreSQL server's processes on this machine (the benchmark's server is local)."""
    found = []
    for process in psutil.process_iter(["name"]):
        if (process.info.get("name") or "").startswith("postgres"):
            found.append(process)
    return found


@dataclass
class CpuUsage:
    wall_s: float
    cpus: int
    machine_busy_s: float
    stolen_s: float
    parts: dict[str, float] = field(default_factory=dict)  # part -> CPU seconds

    @property
    def machine_share(self) -> float:
        """How busy the machine's CPUs were: 1.0 is every CPU busy all the time."""
        return self.machine_busy_s / (self.wall_s * self.cpus) if self.wall_s else 0.0

    @property
    def stolen_share(self) -> float:
        """The CPUs' time the hypervisor gave to other VMs."""
        return self.stolen_s / (self.wall_s * self.cpus) if self.wall_s else 0.0

    def per_event_ms(self, part: str, events: int) -> float:
        return 1000 * self.parts.get(part, 0.0) / events if events else 0.0


class CpuMeter:
    """Started before the measured stretch; `sample()` at its end, while the processes still run.

    Each part's processes are found at the end (a PostgreSQL backend opened by a worker did not exist
    at the start); a process that existed at the start counts only what it used since.
    """

    def __init__(self, parts: dict[str, Processes], wall: Callable[[], float]):
        self._parts = parts
        self._wall = wall
        self._started_wall = wall()
        self._started_busy = _busy_seconds()
        self._started_stolen = _stolen_seconds()
        self._before: dict[tuple[int, float], float] = {}
        for processes in parts.values():
            for process in processes():
                try:
                    self._before[(process.pid, process.create_time())] = _process_seconds(process)
                except psutil.Error:
                    continue

    def sample(self) -> CpuUsage:
        usage = CpuUsage(self._wall() - self._started_wall, psutil.cpu_count() or 1,
                         _busy_seconds() - self._started_busy, _stolen_seconds() - self._started_stolen)
        for name, processes in self._parts.items():
            total = 0.0
            for process in processes():
                try:
                    key = (process.pid, process.create_time())
                    total += _process_seconds(process) - self._before.get(key, 0.0)
                except psutil.Error:
                    continue  # ended meanwhile: what it used is lost, the machine's figure still has it
            usage.parts[name] = total
        return usage

