"""Evaluation: the prequential report (``streamrec evaluate``) and what the guard would
hold on a replayed data set (``streamrec guard report``); both run ``streamrec_eval``
in-process, no broker needed."""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from streamrec.cli.options import StateDir, Verbose, settings_from, setup_logging

class EvaluateOnly(str, Enum):
    """Parts of ``streamrec evaluate`` that run alone."""

    prequential = "prequential"
    seed_protocol = "seed-protocol"


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
                 help="seed protocol (every --seed-* default: SeedConfig in "
                      "streamrec_eval/seed_protocol.py): time cut, current events before it, "
                      "new after")] = None,
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
    exploration curve, beyond-accuracy table, seed protocol; a markdown report with plots."""
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
