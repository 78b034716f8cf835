"""The ``streamrec`` command line (typer). Errors become one readable line and exit 1."""

from __future__ import annotations

import logging
import os
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from streamrec.errors import StreamrecError
from streamrec.settings import Settings

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

Bootstrap = Annotated[Optional[str], typer.Option(
    "--bootstrap-servers", envvar="KAFKA_BOOTSTRAP_SERVERS",
    help="Kafka bootstrap servers [default: localhost:9092]")]
StateDir = Annotated[Optional[Path], typer.Option(
    "--state-dir", envvar="STREAMREC_STATE_DIR", help="where state lives [default: .streamrec]")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")]


class LossName(str, Enum):
    """LightFM losses (``STREAMREC_LOSS``)."""

    warp = "warp"
    bpr = "bpr"
    logistic = "logistic"
    warp_kos = "warp-kos"


LossOption = Annotated[Optional[LossName], typer.Option(
    help="LightFM loss [default: warp, or STREAMREC_LOSS]")]


class BrokerEngine(str, Enum):
    """Local broker engines: Apache Kafka (default, durable) or Tansu (in memory)."""

    kafka = "kafka"
    tansu = "tansu"


EngineOption = Annotated[BrokerEngine, typer.Option(
    help="kafka: Apache Kafka 3.9 KRaft from its jars, durable (first start downloads ~46 MB); "
         "tansu: embedded, in memory, quick but slows as it runs (README, Brokers)")]


def settings_from(bootstrap: str | None, state_dir: Path | None, **more: object) -> Settings:
    return Settings().with_overrides(bootstrap_servers=bootstrap, state_dir=state_dir, **more)


def setup_logging(verbose: bool = False) -> None:
    level = "DEBUG" if verbose else os.environ.get("STREAMREC_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("librdkafka").setLevel(
        logging.DEBUG if os.environ.get("STREAMREC_KAFKA_DEBUG") else logging.WARNING)
    for noisy in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def broker(engine: EngineOption = BrokerEngine.kafka,
           port: Annotated[int, typer.Option(help="listener port on 127.0.0.1")] = 9092,
           data_dir: Annotated[Optional[Path], typer.Option(help="kafka engine: log dir "
                                                            "[default: STATE_DIR/kafka]")] = None,
           partitions: Annotated[int, typer.Option(help="partitions per topic")] = 1,
           state_dir: StateDir = None, verbose: Verbose = False) -> None:
    """Run a local broker with the contract's topics until Ctrl-C."""
    from streamrec.broker import ensure_topics, start_broker

    setup_logging(verbose)
    s = settings_from(f"127.0.0.1:{port}", state_dir, partitions=partitions)
    if engine is BrokerEngine.kafka and data_dir is None:
        data_dir = s.state_dir / "kafka"
    b = start_broker(engine.value, port, data_dir)  # type: ignore[arg-type]
    ensure_topics(s)
    typer.echo(f"{engine.value} broker ready on {b.bootstrap} (topics: {', '.join(s.topics)}); "
               "Ctrl-C stops it")
    for name, value in b.client_settings.items():
        typer.echo(f"with this broker, run streamrec with STREAMREC_{name.upper()}="
                   f"{str(value).lower()} (see README, Brokers)")
    _wait_for_signal()
    b.stop()
    typer.echo("broker stopped")


def _wait_for_signal() -> None:
    import threading

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


@app.command()
def worker(bootstrap_servers: Bootstrap = None, state_dir: StateDir = None,
           max_batch: Annotated[Optional[int], typer.Option(help="events per micro-batch")] = None,
           batch_window: Annotated[Optional[float], typer.Option(
               help="seconds to wait for a batch to fill")] = None,
           no_progress: Annotated[bool, typer.Option(
               "--no-progress", help="no progress bars")] = False,
           loss: LossOption = None, verbose: Verbose = False) -> None:
    """The stream worker: micro-batched fit_partial and top-N refresh."""
    from stream_app.app import run_worker

    setup_logging(verbose)
    s = settings_from(bootstrap_servers, state_dir, max_batch=max_batch,
                      batch_window_s=batch_window, loss=loss.value if loss else None)
    level = "DEBUG" if verbose else os.environ.get("STREAMREC_LOG_LEVEL", "INFO").upper()
    run_worker(s, progress=not no_progress, loglevel=level)


@app.command()
def serve(bootstrap_servers: Bootstrap = None, state_dir: StateDir = None,
          host: Annotated[Optional[str], typer.Option(help="bind address")] = None,
          port: Annotated[Optional[int], typer.Option(help="HTTP port [default: 8000]")] = None,
          verbose: Verbose = False) -> None:
    """The lookup consumer and its HTTP API."""
    from consumers.api import run_api

    setup_logging(verbose)
    run_api(settings_from(bootstrap_servers, state_dir, http_host=host, http_port=port))


@produce_app.command("movielens")
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


@produce_app.command("jsonl")
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


@guard_app.command("report")
def guard_report_cmd(
        data: Annotated[Optional[Path], typer.Option(help="MovieLens 100K folder "
                                                     "[default: found]")] = None,
        jsonl: Annotated[Optional[Path], typer.Option(help="replay this JSON-lines file of "
                                                      "events instead")] = None,
        rate: Annotated[float, typer.Option(help="replay speed, events/s (0: each event "
                                            "arrives at its own timestamp)")] = 1e6,
        state_dir: StateDir = None, verbose: Verbose = False) -> None:
    """Replay a data set through the guard: the users and events it would hold, per rule."""
    from streamrec_eval.guard_report import guard_report, load_events

    setup_logging(verbose)
    report = guard_report(load_events(data, jsonl), settings_from(None, state_dir),
                          rate=rate or None)
    typer.echo(report.table())


@app.command()
def recommend(user_id: Annotated[str, typer.Argument(help="the user's id")],
              n: Annotated[int, typer.Option("-n", help="list length")] = 10,
              api: Annotated[str, typer.Option(help="lookup API base URL")] =
              "http://127.0.0.1:8000",
              bootstrap_servers: Bootstrap = None, state_dir: StateDir = None) -> None:
    """Print a user's current list (from the lookup API, else from the topic)."""
    import dataclasses

    import orjson

    from consumers.topic_lookup import latest_list
    from streamrec.client import LookupClient
    from streamrec.errors import LookupFailed

    s = settings_from(bootstrap_servers, state_dir)
    token = s.api_token.get_secret_value() if s.api_token else None
    try:
        with LookupClient(api, token=token, timeout=5) as client:
            doc = dataclasses.asdict(client.get(user_id, n))
        doc["items"] = [{k: v for k, v in it.items() if v is not None} for it in doc["items"]]
    except LookupFailed:
        doc = latest_list(s, user_id, n)
    typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())


@app.command()
def retrain(since: Annotated[Optional[float], typer.Option(
                help="only interaction events at or after this epoch time")] = None,
            dry_run: Annotated[bool, typer.Option(
                help="train and evaluate only; write and announce nothing")] = False,
            holdout: Annotated[float, typer.Option(
                help="newest fraction of events held out for evaluation")] = 0.02,
            loss: LossOption = None,
            bootstrap_servers: Bootstrap = None, state_dir: StateDir = None,
            verbose: Verbose = False) -> None:
    """Replay the topics from the beginning, train a fresh model, hot-swap it into the worker."""
    import orjson

    from stream_app.retrain import run_retrain
    from streamrec.broker import ensure_topics, wait_for_broker

    setup_logging(verbose)
    s = settings_from(bootstrap_servers, state_dir, loss=loss.value if loss else None)
    wait_for_broker(s.bootstrap_servers, s.broker_wait_s, s.kafka_common())
    ensure_topics(s)
    result = run_retrain(s, since=since, dry_run=dry_run, holdout=holdout)
    typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if not result["records"]:
        typer.echo("streamrec: the topics are empty; nothing to train on", err=True)
        raise typer.Exit(1)


@app.command()
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


class EvaluateOnly(str, Enum):
    """Parts of ``streamrec evaluate`` that run alone."""

    prequential = "prequential"
    seed_protocol = "seed-protocol"


@app.command()
def evaluate(data: Annotated[Optional[Path], typer.Option(help="MovieLens 100K folder")] = None,
             out: Annotated[Path, typer.Option(help="report folder")] = Path("bench/results"),
             no_ablation: Annotated[bool, typer.Option(
                 "--no-ablation", help="skip the ablation and cold-start runs")] = False,
             no_exploration: Annotated[bool, typer.Option(
                 "--no-exploration", help="skip the exploration trade-off curve")] = False,
             no_seed_protocol: Annotated[bool, typer.Option(
                 "--no-seed-protocol",
                 help="skip the seed protocol (AUC training curves, the slowest part)")] = False,
             only: Annotated[Optional[EvaluateOnly], typer.Option(
                 help="run this part alone and print it (no evaluation.md)")] = None,
             threads: Annotated[int, typer.Option(
                 help="LightFM threads per micro-batch of the evaluated engines")] = 1,
             seed_split: Annotated[Optional[float], typer.Option(
                 help="seed protocol: time cut, current events before it, new after")] = None,
             seed_validation_fraction: Annotated[Optional[float], typer.Option(
                 help="seed protocol: random share of the current events held out")] = None,
             seed_max_epochs: Annotated[Optional[int], typer.Option(
                 help="seed protocol: the full-fit curve goes up to this many epochs")] = None,
             seed_folds: Annotated[Optional[int], typer.Option(
                 help="seed protocol: k of the k-fold split of the new events")] = None,
             seed_epochs_grid: Annotated[Optional[str], typer.Option(
                 help="seed protocol: comma-separated epochs per micro-batch to try")] = None,
             seed_batch_size: Annotated[Optional[int], typer.Option(
                 help="seed protocol: events per fit_partial micro-batch")] = None,
             seed_auc_tolerance: Annotated[Optional[float], typer.Option(
                 help="seed protocol: the fewest epochs within this AUC of the best win")] =
             None,
             seed_base_epochs: Annotated[Optional[int], typer.Option(
                 help="seed protocol: full-fit epochs of the model fit_partial starts from "
                      "[default: the ones the full-fit curve chooses]")] = None,
             verbose: Verbose = False) -> None:
    """Prequential comparison (popularity, static, periodic, micro-batch sizes), ablation,
    exploration curve, beyond-accuracy table, seed protocol; a markdown report with plots.
    The --seed-* defaults are SeedConfig's (streamrec_eval/seed_protocol.py)."""
    from streamrec.movielens import find_movielens
    from streamrec_eval.adapters import engine_settings
    from streamrec_eval.evaluate import load_stream, run_all, run_evaluation
    from streamrec_eval.report import render_section
    from streamrec_eval.seed_protocol import SeedConfig, parse_grid, run_seed_protocol

    setup_logging(verbose)
    logging.getLogger().setLevel(logging.WARNING)
    given = {"split": seed_split, "validation_fraction": seed_validation_fraction,
             "max_epochs": seed_max_epochs, "folds": seed_folds,
             "epochs_grid": parse_grid(seed_epochs_grid) if seed_epochs_grid else None,
             "batch_size": seed_batch_size, "tolerance": seed_auc_tolerance}
    seed = SeedConfig(**{k: v for k, v in given.items() if v is not None})
    settings = engine_settings(num_threads=threads)
    path = find_movielens(data)
    if only is EvaluateOnly.prequential:
        doc = run_all(load_stream(path), out, settings)
        typer.echo(doc["table"])
        typer.echo(f"wrote {out / 'prequential.json'} and plots")
    elif only is EvaluateOnly.seed_protocol:
        doc = run_seed_protocol(load_stream(path), out, settings, seed,
                                   base_epochs=seed_base_epochs)
        typer.echo("\n".join(render_section(doc)))
        typer.echo(f"wrote {out / 'seed_protocol.json'} and plots")
    else:
        doc = run_evaluation(path, out, ablation=not no_ablation,
                                seed_protocol=not no_seed_protocol,
                                exploration=not no_exploration, settings=settings,
                                seed_config=seed, seed_base_epochs=seed_base_epochs)
        typer.echo(doc["table"])
        typer.echo(f"wrote {out / 'evaluation.md'}, {out / 'prequential.json'} and plots")


@app.command()
def demo(data: Annotated[Optional[Path], typer.Option(help="MovieLens 100K folder")] = None,
         rate: Annotated[float, typer.Option(help="replay rate of the last 10 %, events/s")] = 500,
         port: Annotated[int, typer.Option(help="HTTP port of the lookup API")] = 8000,
         bootstrap_servers: Annotated[Optional[str], typer.Option(
             "--bootstrap-servers", help="use this broker instead of starting one")] = None,
         engine: EngineOption = BrokerEngine.kafka,
         state_dir: StateDir = None,
         exit_after: Annotated[bool, typer.Option(
             help="stop after the replay instead of serving until Ctrl-C")] = False) -> None:
    """Everything on one machine: broker, bootstrap, worker, lookup API, MovieLens replay."""
    from streamrec.demo import run_demo

    setup_logging(False)
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("librdkafka").setLevel(logging.ERROR)
    run_demo(data=data, rate=rate, http_port=port, bootstrap=bootstrap_servers,
             engine=engine.value, state_dir=state_dir, serve_forever=not exit_after)


def main() -> None:
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


if __name__ == "__main__":
    main()
