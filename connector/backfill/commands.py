"""`connector okendo backfill reviews|loyalty`: bring in what happened before the webhooks."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from contextlib import contextmanager

import click

from connector.cli_context import Context, current_ledger, pass_context


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:backfill"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _open(ctx: Context):  # type: ignore[no-untyped-def]
    from connector.backfill.api import open_api
    from connector.config import ConfigError

    settings = ctx.settings()
    engine = current_ledger(settings)
    try:
        api = open_api(settings, engine)
    except ConfigError as error:
        engine.dispose()
        raise click.ClickException(str(error)) from None
    return settings, engine, api


@contextmanager
def _run(api, engine, what: str):  # type: ignore[no-untyped-def]
    """Ctrl-C ends the command with 130 and says how to go on; the client and the ledger are closed."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo(f"\nstopped; run the same command again to go on from the last {what} stored", err=True)
        raise SystemExit(130) from None
    finally:
        api.close()
        engine.dispose()


def _echo_refused(problems: list[str]) -> None:
    for problem in problems[:20]:
        click.echo(f"  refused: {problem}", err=True)


def _okendo_failure(error: Exception, rerun: str) -> click.ClickException:
    lines = [str(error), *(f"  {detail}" for detail in getattr(error, "details", []))]
    return click.ClickException("\n".join(lines) + f"\nnothing stored is lost: {rerun}")


@click.group("backfill")
def backfill() -> None:
    """Bring in history from Okendo's API: every review, every known member's loyalty state.

    What is read is stored in the ledger as events (origin: backfill) and delivered by the workers
    like webhooks, in order: an older state never overwrites a newer one. Re-running stores only
    what changed; a stopped run goes on where it stopped.
    """


@backfill.command("reviews")
@click.option("--status", "statuses", multiple=True, type=click.Choice(["approved", "pending", "rejected"]),
              help="Only reviews of this moderation status (repeatable). Default: all three.")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
              help="Only reviews created on or after this date (UTC), e.g. 2025-01-01.")
@click.option("--dry-run", is_flag=True, help="Read and count what would be stored; store nothing.")
@click.option("--restart", is_flag=True, help="Start from the first page even if an earlier run stopped midway.")
@pass_context
def backfill_reviews(ctx: Context, statuses: tuple[str, ...], since: datetime | None, dry_run: bool,
                     restart: bool) -> None:
    """Store every review Okendo holds as an event, to be delivered like a webhook.

    A review the ledger has never seen counts as review.create; one it knows whose content differs,
    as review.update; one whose newest state the ledger already holds is skipped. Paced under
    Okendo's 2 requests per second, shared with every other process on the ledger.
    """
    from connector.backfill import syncs
    from connector.backfill.reviews import STATUSES, PageReport, ReviewBackfill
    from connector.okendo_api import OkendoApiError

    settings, engine, api = _open(ctx)
    since_utc = since.replace(tzinfo=timezone.utc) if since else None

    def progress(report: PageReport) -> None:
        reached = f", reached {report.reached[:10]}" if report.reached else ""
        eta = "" if report.eta_s == 0 else f", ETA {_duration(report.eta_s)}"
        click.echo(f"{report.status}: page {report.page}: {report.read:,} reviews read, "
                   f"{report.stored:,} {'to store' if dry_run else 'stored'} "
                   f"({report.per_second:.0f}/s{eta}{reached})")

    backfiller = ReviewBackfill(engine, api, owner=_owner(), dry_run=dry_run, restart=restart, since=since_utc,
                                on_page=progress)
    total_stored = 0
    with _run(api, engine, "page"):
        for status in statuses or STATUSES:
            try:
                summary = backfiller.run_status(status)
            except syncs.SyncBusy as busy:
                raise click.ClickException(str(busy)) from None
            except OkendoApiError as error:
                raise _okendo_failure(error, "run the same command again to go on from the last page stored"
                                      ) from None
            counts = summary.counts
            total_stored += counts.stored
            verb = "would store" if dry_run else "stored"
            read = f"{counts.read:,} reviews in {summary.pages} page(s)"
            if summary.resumed:
                read = (f"{summary.read_in_all:,} reviews in {summary.pages_in_all} page(s) in all, "
                        f"{counts.read:,} in {summary.pages} by this run")
            click.echo(
                f"{status}: done{' (went on from an earlier run)' if summary.resumed else ''}: "
                f"{read}, {_duration(summary.elapsed_s)}; "
                f"{verb} {counts.stored:,} ({counts.missing:,} new to the connector, {counts.different:,} changed), "
                f"{counts.unchanged:,} unchanged, {counts.deleted:,} deleted by webhook and left deleted"
                + (f", {counts.already:,} stored by another run" if counts.already else "")
                + (f", {len(summary.problems)} refused" if summary.problems else ""))
            _echo_refused(summary.problems)
    if dry_run:
        click.echo("dry run: nothing was stored")
    elif total_stored:
        worker = "the server's embedded workers" if settings.worker.embedded else "`connector worker`"
        click.echo(f"{total_stored:,} event(s) stored (origin: backfill); {worker} deliver them, batched and "
                   "rate-limited: watch the status page")
    else:
        click.echo("nothing new: the ledger already holds every review's newest state")


@backfill.command("loyalty")
@click.option("--emails", "emails_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A file of shoppers' emails, one per line, instead of every shopper the connector knows.")
@click.option("--dry-run", is_flag=True, help="Read and count what would be stored; store nothing.")
@click.option("--restart", is_flag=True, help="Start from the first shopper even if an earlier run stopped midway.")
@pass_context
def backfill_loyalty(ctx: Context, emails_file: Path | None, dry_run: bool, restart: bool) -> None:
    """Refresh the loyalty state (points, tier, status) of every shopper the connector knows.

    Asks Okendo for each shopper's loyalty member (by email, or by loyalty customer id when only
    that is known) and stores what changed as a loyalty_customer event, delivered like a webhook.
    """
    from connector.backfill import syncs
    from connector.backfill.loyalty import LoyaltyBackfill, ShopperListError, known_shoppers, shoppers_from_file
    from connector.okendo_api import OkendoApiError

    settings, engine, api = _open(ctx)
    with _run(api, engine, "shopper"):
        try:
            shoppers = shoppers_from_file(emails_file) if emails_file else known_shoppers(engine)
        except ShopperListError as error:
            raise click.ClickException(str(error)) from None
        if not shoppers:
            click.echo("no shoppers known yet: the ledger holds no email nor loyalty member; give --emails FILE")
            return
        source = f"{emails_file}" if emails_file else "the ledger"
        click.echo(f"{len(shoppers):,} shopper(s) from {source}")

        def progress(done: int, stored: int, per_second: float, eta_s: float | None) -> None:
            click.echo(f"loyalty: {done:,} of {len(shoppers):,} shoppers asked, {stored:,} "
                       f"{'to store' if dry_run else 'stored'} ({per_second:.1f}/s, ETA {_duration(eta_s)})")

        backfiller = LoyaltyBackfill(engine, api, owner=_owner(), dry_run=dry_run, restart=restart,
                                     on_progress=progress)
        try:
            summary = backfiller.run(shoppers)
        except syncs.SyncBusy as busy:
            raise click.ClickException(str(busy)) from None
        except OkendoApiError as error:
            raise _okendo_failure(error, "run the same command again to go on from the last shopper stored") from None
        counts = summary.counts
        click.echo(f"loyalty: done{' (went on from an earlier run)' if summary.resumed else ''}: "
                   f"{summary.asked:,} asked, {summary.not_members:,} not loyalty members; "
                   f"{'would store' if dry_run else 'stored'} {counts.stored:,} ({counts.missing:,} new to the "
                   f"connector, {counts.different:,} changed), {counts.unchanged:,} unchanged")
        _echo_refused(summary.problems)
