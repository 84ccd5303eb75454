"""A closed-loop HTTP load generator: `concurrency` connections, each posting its next
pre-signed request as soon as the previous answer arrives, for a fixed duration.

Every request carries its own message id (a redelivery would be cheaper to answer), and the
latency of each is measured from just before it is sent to the end of its answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    latencies_s: list[float] = field(default_factory=list)  # of acknowledged (2xx) requests
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # transport errors by exception type
    exhausted: bool = False  # the pre-signed requests ran out before the duration ended

    @property
    def acknowledged(self) -> int:
        return sum(count for status, count in self.statuses.items() if 200 <= status < 300)

    @property
    def failed(self) -> int:
        return sum(self.errors.values()) + sum(c for s, c in self.statuses.items() if not 200 <= s < 300)

    @property
    def per_second(self) -> float:
        return self.acknowledged / self.seconds if self.seconds else 0.0

    def percentile_ms(self, p: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))  # nearest rank
        return ordered[index] * 1000

    def failures(self) -> str:
        """The failed count, with what failed when anything did: `26 (503 ×20, ServerDisconnectedError ×6)`."""
        kinds = [f"{status} ×{n}" for status, n in sorted(self.statuses.items()) if not 200 <= status < 300]
        kinds += [f"{name} ×{n}" for name, n in sorted(self.errors.items())]
        return f"{self.failed} ({', '.join(kinds)})" if kinds else str(self.failed)

    def summary(self) -> str:
        return (f"c={self.concurrency:<3} {self.per_second:8.0f}/s p50 {self.percentile_ms(50):6.1f} ms "
                f"p95 {self.percentile_ms(95):6.1f} ms p99 {self.percentile_ms(99):6.1f} ms "
                f"errors {self.failures()}{' EXHAUSTED' if self.exhausted else ''}")


async def _run(url: str, requests: Iterator[tuple[dict[str, str], bytes]], concurrency: int,
               duration_s: float, warmup_s: float) -> LoadResult:
    result = LoadResult(concurrency=concurrency, seconds=0.0)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    loop = asyncio.get_running_loop()
    started = loop.time()
    measuring_from = started + warmup_s
    stop_at = measuring_from + duration_s

    async def client(session: aiohttp.ClientSession) -> None:
        while (now := loop.time()) < stop_at:
            try:
                headers, body = next(requests)
            except StopIteration:
                result.exhausted = True
                return
            sent = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                if now >= measuring_from:
                    result.errors[type(error).__name__] += 1
                continue
            elapsed = time.perf_counter() - sent
            if now >= measuring_from:
                result.statuses[status] += 1
                if 200 <= status < 300:
                    result.latencies_s.append(elapsed)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    result.seconds = min(loop.time(), stop_at) - measuring_from
    return result


def run_load(url: str, requests: Iterator[tuple[dict[str, str], bytes]], *, concurrency: int,
             duration_s: float, warmup_s: float = 1.0) -> LoadResult:
    """Post for `warmup_s` unmeasured, then `duration_s` measured; requests are (headers, body)."""
    return asyncio.run(_run(url, requests, concurrency, duration_s, warmup_s))
