"""Running the system: a local broker, the worker, the lookup API, a retrain."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from streamrec.cli.options import (Bootstrap, BrokerEngine, EngineOption, LossOption, StateDir,
                                   Verbose, settings_from, setup_logging, wait_for_signal)

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
    wait_for_signal()
    b.stop()
    typer.echo("broker stopped")


def worker(bootstrap_servers: Bootstrap = None, state_dir: StateDir = None,
           max_batch: Annotated[Optional[int], typer.Option(help="events per micro-batch")] = None,
           batch_window: Annotated[Optional[float], typer.Option(
               help="seconds to wait for a batch to fill")] = None,
           no_progress: Annotated[bool, typer.Option(
               "--no-progress", help="no progress bars")] = False,
           shards: Annotated[Optional[int], typer.Option(
               min=1, help="user-sharded workers: this process supervises the shards the "
               "consumer group gives it; every worker of the deployment uses the same number "
               "and a STATE_DIR they all reach (docs/scaling.md) [default: 1]")] = None,
           loss: LossOption = None, verbose: Verbose = False) -> None:
    """The stream worker: micro-batched fit_partial and top-N refresh."""
    from stream_app.app import run_worker

    setup_logging(verbose)
    s = settings_from(bootstrap_servers, state_dir, max_batch=max_batch,
                      batch_window_s=batch_window, loss=loss.value if loss else None,
                      shards=shards)
    level = "DEBUG" if verbose else os.environ.get("STREAMREC_LOG_LEVEL", "INFO").upper()
    run_worker(s, progress=not no_progress, loglevel=level)


def serve(bootstrap_servers: Bootstrap = None, state_dir: StateDir = None,
          host: Annotated[Optional[str], typer.Option(help="bind address")] = None,
          port: Annotated[Optional[int], typer.Option(help="HTTP port [default: 8000]")] = None,
          verbose: Verbose = False) -> None:
    """The lookup consumer and its HTTP API."""
    from consumers.api import run_api

    setup_logging(verbose)
    run_api(settings_from(bootstrap_servers, state_dir, http_host=host, http_port=port))


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
