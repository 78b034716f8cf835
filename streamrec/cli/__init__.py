"""The ``streamrec`` command line (typer): the only module that imports every layer.

Each command imports what it runs (``stream_app``, ``consumers``, ``producers``,
``streamrec_eval``) inside its function, so ``streamrec --help`` stays quick and nothing
below the command line imports it. Errors become one readable line and exit 1; an invalid
setting exits 2.

- ``run.py``: broker, worker, serve, retrain;
- ``produce.py``: produce movielens / jsonl, release;
- ``recommend.py``: recommend;
- ``evaluate.py``: evaluate, guard report;
- ``demo.py``: demo (the whole system on one machine);
- ``options.py``: the options, settings and logging the commands share.

``python -m streamrec.cli`` runs it too (the demo and the tests spawn processes that way).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from streamrec.cli import demo, evaluate, produce, recommend, run
from streamrec.errors import StreamrecError

app = typer.Typer(help="streamrec: fresh recommendations from an event stream.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        from streamrec import __version__

        typer.echo(f"streamrec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="print the version and exit")] = False) -> None:
    """streamrec: fresh recommendations from an event stream."""


produce_app = typer.Typer(help="Send events to the interactions topic.", no_args_is_help=True)
app.add_typer(produce_app, name="produce")
guard_app = typer.Typer(help="The fraud and bot guard.", no_args_is_help=True)
app.add_typer(guard_app, name="guard")

app.command()(run.broker)
app.command()(run.worker)
app.command()(run.serve)
produce_app.command("movielens")(produce.produce_movielens)
produce_app.command("jsonl")(produce.produce_jsonl_cmd)
guard_app.command("report")(evaluate.guard_report_cmd)
app.command()(recommend.recommend)
app.command()(run.retrain)
app.command()(produce.release)
app.command()(evaluate.evaluate)
app.command()(demo.demo)


def main() -> None:
    """The console script: run the command, errors as one line and an exit code."""
    from pydantic import ValidationError

    try:
        app()
    except StreamrecError as exc:
        typer.echo(f"streamrec: {exc}", err=True)
        sys.exit(1)
    except ValidationError as exc:   # a STREAMREC_* variable or flag out of its range
        problems = "; ".join(f"STREAMREC_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                             for e in exc.errors()[:3])
        typer.echo(f"streamrec: invalid setting ({problems}); see README, Command line",
                   err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
