"""Sending events: MovieLens or a JSON-lines file into the topics, a guard release."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from streamrec.cli.options import Bootstrap, StateDir, Verbose, settings_from, setup_logging

def produce_movielens(path: Annotated[Optional[Path], typer.Argument(
                          help="MovieLens 100K folder [default: found or downloaded]")] = None,
                      rate: Annotated[Optional[float], typer.Option(help="events/s")] = None,
                      limit: Annotated[Optional[int], typer.Option(
                          help="at most N ratings")] = None,
                      skip_fraction: Annotated[float, typer.Option(
                          help="skip the first F of ratings (time order)")] = 0.0,
                      no_metadata: Annotated[bool, typer.Option(
                          help="do not send users/items metadata")] = False,
                      bootstrap_servers: Bootstrap = None, state_dir: StateDir = None,
                      verbose: Verbose = False) -> None:
    """Replay MovieLens 100K in timestamp order as rating events."""
    from producers.movielens import replay_movielens
    from streamrec.broker import ensure_topics
    from streamrec.movielens import find_movielens

    setup_logging(verbose)
    s = settings_from(bootstrap_servers, state_dir)
    ensure_topics(s)
    report = replay_movielens(s, find_movielens(path), rate=rate, limit=limit,
                              skip_fraction=skip_fraction, metadata=not no_metadata)
    typer.echo(f"sent {report.sent} ratings and {report.metadata} metadata records, "
               f"delivered {report.delivered}, failed {report.failed}")
    if report.failed:
        raise typer.Exit(1)


def produce_jsonl_cmd(file: Annotated[Path, typer.Argument(help="one JSON event per line")],
                      rate: Annotated[Optional[float], typer.Option(help="events/s")] = None,
                      bootstrap_servers: Bootstrap = None, state_dir: StateDir = None,
                      verbose: Verbose = False) -> None:
    """Send events from a JSON-lines file (invalid lines are reported and skipped)."""
    from producers.jsonl import produce_jsonl
    from streamrec.broker import ensure_topics

    setup_logging(verbose)
    s = settings_from(bootstrap_servers, state_dir)
    ensure_topics(s)
    report, problems = produce_jsonl(s, file, rate)
    for p in problems[:20]:
        typer.echo(p, err=True)
    typer.echo(f"sent {report.sent}, delivered {report.delivered}, invalid {report.invalid}, "
               f"failed {report.failed}")
    if problems or report.failed:
        raise typer.Exit(1)


def release(user: Annotated[Optional[str], typer.Option(help="a quarantined user id")] = None,
            item: Annotated[Optional[str], typer.Option(help="a quarantined item id")] = None,
            bootstrap_servers: Bootstrap = None, state_dir: StateDir = None,
            verbose: Verbose = False) -> None:
    """Release a user or item the fraud/bot guard quarantined; replay their held events."""
    from producers.release import release as do_release

    setup_logging(verbose)
    if (user is None) == (item is None):
        raise typer.BadParameter("give exactly one of --user or --item")
    n = do_release(settings_from(bootstrap_servers, state_dir), user=user, item=item)
    typer.echo(f"released {'user ' + user if user else 'item ' + item}; "
               f"{n} held events replayed into training")
