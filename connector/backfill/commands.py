"""`connector okendo backfill all|reviews|loyalty`: bring in what happened before the webhooks."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone
from contextlib import contextmanager
from pathlib import Path

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
def _run(api, engine, settings, what: str):  # type: ignore[no-untyped-def]
    """Ctrl-C ends the command with 130 and says how to go on; a lost lease, a failing ledger or
    Okendo's refusal end it with a message, not a traceback; the client and the ledger are closed."""
    from sqlalchemy.exc import SQLAlchemyError

    from connector.backfill import syncs
    from connector.backfill.reviews import CursorRefused, PageLoop
    from connector.cli_context import ledger_error
    from connector.okendo_api import OkendoApiError

    try:
        yield
    except KeyboardInterrupt:
        click.echo(f"\nstopped; run the same command again to go on from the last {what} stored", err=True)
        raise SystemExit(130) from None
    except syncs.SyncBusy as busy:
        raise click.ClickException(str(busy)) from None
    except syncs.SyncLost as lost:
        raise click.ClickException(f"{lost}; nothing it stored is lost, and that process goes on from there: "
                                   "watch it on the status page") from None
    except (CursorRefused, PageLoop) as error:
        raise _okendo_failure(error, None) from None
    except OkendoApiError as error:
        if error.status in (400, 422):
            rerun = "Okendo refuses this request as asked: check the options given"
        else:
            rerun = f"run the same command again to go on from the last {what} stored"
        raise _okendo_failure(error, rerun) from None
    except SQLAlchemyError as error:
        raise click.ClickException(ledger_error(settings, error) + f"; what was stored stays: run the same command "
                                   f"again once the ledger answers, to go on from the last {what} stored") from None
    finally:
        api.close()
        engine.dispose()


def _echo_refused(problems: list[str]) -> None:
    for problem in problems[:20]:
        click.echo(f"  refused: {problem}", err=True)
    if len(problems) > 20:
        click.echo(f"  and {len(problems) - 20:,} more refused", err=True)


def _okendo_failure(error: Exception, rerun: str | None) -> click.ClickException:
    _echo_refused(getattr(error, "problems", []))  # shoppers named on the terminal, never in the ledger
    lines = [str(error), *(f"  {detail}" for detail in getattr(error, "details", []))]
    return click.ClickException("\n".join(lines) + (f"\nnothing stored is lost: {rerun}" if rerun else ""))


def _set_aside(what: str, earlier: dict, now: str) -> None:
    click.echo(f"{what}: the run that stopped {earlier_words(earlier)}; this one {now}: starting afresh "
               "(what it stored stays)")


def earlier_words(options: dict) -> str:
    if "source" in options:
        return "read another list of shoppers" if options.get("source") != "ledger" else \
            "read the shoppers the ledger knew"
    return f"had --since {options['since'][:10]}" if options.get("since") else "had no --since"


@click.group("backfill")
def backfill() -> None:
    """Bring in history from Okendo's API: every review, every known member's loyalty state.

    `connector okendo backfill all` does both, reviews first (their reviewers are the shoppers
    whose loyalty is then asked). What is read is stored in the ledger as events (origin:
    backfill) and delivered by the workers like webhooks, in order: an older state never
    overwrites a newer one. Re-running stores only what changed; a stopped run goes on where it
    stopped.
    """


_STATUS = click.option("--status", "statuses", multiple=True, type=click.Choice(["approved", "pending", "rejected"]),
                       help="Only reviews of this moderation status (repeatable). Default: all three.")
_SINCE = click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
                      help="Only reviews created on or after this date (UTC), e.g. 2025-01-01.")
_DRY_RUN = click.option("--dry-run", is_flag=True, help="Read and count what would be stored; store nothing.")
_RESTART = click.option("--restart", is_flag=True, help="Start from the beginning even if an earlier run stopped midway.")
_EMAILS = click.option("--emails", "emails_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                       help="A file of shoppers' emails, one per line, instead of every shopper the connector knows.")


@backfill.command("all")
@_SINCE
@_DRY_RUN
@_RESTART
@pass_context
def backfill_all(ctx: Context, since: datetime | None, dry_run: bool, restart: bool) -> None:
    """Every review (all statuses), then the loyalty state of every shopper the ledger then knows.

    The one command to run after installing: `reviews` then `loyalty`, each resumable as they are.
    """
    settings, engine, api = _open(ctx)
    with _run(api, engine, settings, "page or shopper"):
        stored = _reviews(settings, engine, api, (), since, dry_run, restart)
        stored += _loyalty(engine, api, None, dry_run, restart, settings)
        _stored_summary(settings, stored, dry_run, "review or loyalty member")


@backfill.command("reviews")
@_STATUS
@_SINCE
@_DRY_RUN
@_RESTART
@pass_context
def backfill_reviews(ctx: Context, statuses: tuple[str, ...], since: datetime | None, dry_run: bool,
                     restart: bool) -> None:
    """Store every review Okendo holds as an event, to be delivered like a webhook.

    A review the ledger has never seen counts as review.create; one it knows whose content differs,
    as review.update; one whose newest state the ledger already holds is skipped. Paced under
    Okendo's 2 requests per second, shared with every other process on the ledger.
    """
    settings, engine, api = _open(ctx)
    with _run(api, engine, settings, "page"):
        stored = _reviews(settings, engine, api, statuses, since, dry_run, restart)
        _stored_summary(settings, stored, dry_run, "review")


def _stored_summary(settings, stored: int, dry_run: bool, what: str) -> None:  # type: ignore[no-untyped-def]
    if dry_run:
        click.echo("dry run: nothing was stored")
    elif stored:
        worker = "the server's embedded workers" if settings.worker.embedded else "`connector worker`"
        click.echo(f"{stored:,} event(s) stored (origin: backfill); {worker} deliver them, batched and "
                   "rate-limited: watch the status page")
    else:
        click.echo(f"nothing new: the ledger already holds every {what}'s newest state")


def _reviews(settings, engine, api, statuses: tuple[str, ...], since: datetime | None,  # type: ignore[no-untyped-def]
             dry_run: bool, restart: bool) -> int:
    from connector.backfill.reviews import STATUSES, PageReport, ReviewBackfill, StatusSummary

    since_utc = since.replace(tzinfo=timezone.utc) if since else None

    def progress(report: PageReport) -> None:
        reached = f", reached {report.reached[:10]}" if report.reached else ""
        eta = "" if report.eta_s == 0 else f", ETA {_duration(report.eta_s)}"
        click.echo(f"{report.status}: page {report.page}: {report.read:,} reviews read, "
                   f"{report.stored:,} {'to store' if dry_run else 'stored'} "
                   f"({report.per_second:.0f}/s{eta}{reached})")

    def done(summary: StatusSummary) -> None:
        status, counts = summary.status, summary.counts
        if summary.skipped:
            click.echo(f"{status}: done by the run this one went on from: {counts.read:,} reviews in "
                       f"{summary.pages} page(s); not read again")
            return
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
            + (f", {counts.settling:,} changed by a webhook moments before the read (the webhook stands)"
               if counts.settling else "")
            + (f", {counts.already:,} stored by another run" if counts.already else "")
            + (f", {len(summary.problems)} refused" if summary.problems else ""))
        _echo_refused(summary.problems)

    def set_aside(status: str, earlier: dict) -> None:
        _set_aside(status, earlier, f"has {'--since ' + since_utc.date().isoformat() if since_utc else 'no --since'}")

    backfiller = ReviewBackfill(engine, api, owner=_owner(), dry_run=dry_run, restart=restart, since=since_utc,
                                on_page=progress, on_set_aside=set_aside, max_body_bytes=settings.receiver.max_body_bytes)
    summaries = backfiller.run(statuses or STATUSES, on_done=done)
    return sum(summary.counts.stored for summary in summaries if not summary.skipped)


@backfill.command("loyalty")
@_EMAILS
@_DRY_RUN
@_RESTART
@pass_context
def backfill_loyalty(ctx: Context, emails_file: Path | None, dry_run: bool, restart: bool) -> None:
    """Refresh the loyalty state (points, tier, status) of every shopper the connector knows.

    Asks Okendo for each shopper's loyalty member (by email, or by loyalty customer id when only
    that is known) and stores what changed as a loyalty_customer event, delivered like a webhook.
    """
    settings, engine, api = _open(ctx)
    with _run(api, engine, settings, "shopper"):
        _loyalty(engine, api, emails_file, dry_run, restart, settings)


def _loyalty(engine, api, emails_file: Path | None, dry_run: bool, restart: bool,  # type: ignore[no-untyped-def]
             settings) -> int:
    from connector.backfill.loyalty import LoyaltyBackfill, ShopperListError, known_shoppers, shoppers_from_file

    try:
        shoppers = shoppers_from_file(emails_file) if emails_file else known_shoppers(engine)
    except ShopperListError as error:
        raise click.ClickException(str(error)) from None
    if not shoppers.shoppers:
        click.echo("no shoppers known yet: the ledger holds no email nor loyalty member; give --emails FILE")
        return 0
    click.echo(f"{len(shoppers.shoppers):,} shopper(s) from {shoppers.source}")

    def progress(done: int, stored: int, per_second: float, eta_s: float | None) -> None:
        click.echo(f"loyalty: {done:,} of {len(shoppers.shoppers):,} shoppers asked, {stored:,} "
                   f"{'to store' if dry_run else 'stored'} ({per_second:.1f}/s, ETA {_duration(eta_s)})")

    backfiller = LoyaltyBackfill(engine, api, owner=_owner(), dry_run=dry_run, restart=restart,
                                 on_progress=progress, max_body_bytes=settings.receiver.max_body_bytes,
                                 on_set_aside=lambda earlier: _set_aside("loyalty", earlier, f"reads {shoppers.source}"))
    summary = backfiller.run(shoppers)
    counts = summary.counts
    click.echo(f"loyalty: done{' (went on from an earlier run)' if summary.resumed else ''}: "
               f"{summary.asked:,} asked, {summary.not_members:,} not loyalty members; "
               f"{'would store' if dry_run else 'stored'} {counts.stored:,} ({counts.missing:,} new to the "
               f"connector, {counts.different:,} changed), {counts.unchanged:,} unchanged"
               + (f", {len(summary.problems):,} refused" if summary.problems else ""))
    _echo_refused(summary.problems)
    return counts.stored
