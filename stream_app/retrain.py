"""Full training by replaying the topics: the worker's bootstrap and ``streamrec retrain``.

Both read ``users``, ``items`` and ``interactions`` from the beginning (or from given
offsets) into a fresh Engine, then fit it with ``epochs_bootstrap`` full epochs. Retrain
also holds out the newest events to evaluate the new model before it is announced, then
trains on them too, so the model it hands over has seen every event up to its snapshot.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from stream_app.batch import process_records
from stream_app.engine import Engine
from stream_app.store import WorkerStore
from streamrec.kafka import producer_config
from streamrec.replay import Record, read_topics
from streamrec.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Replayed:
    """A fresh engine with every replayed record mapped (not yet trained)."""

    engine: Engine
    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    records: int = 0
    invalid: list[tuple[bytes | None, bytes | None, str]] = field(default_factory=list)


def replay_into_engine(settings: Settings, since: float | None = None, progress: bool = True,
                       until_time: float | None = None) -> Replayed:
    """Read the worker's topics into a fresh Engine: ids, features, history, dedup, offsets.

    ``since`` drops interaction events older than that epoch time (metadata is kept whole);
    ``until_time`` ends the replay at records newer than that, so a steady stream of new
    events cannot keep it going forever; whatever lies beyond is picked up afterwards from
    the offsets stored with the engine.
    """
    engine = Engine(settings)
    topics = [settings.topic_users, settings.topic_items, settings.topic_interactions,
              settings.topic_released]
    shard = settings.shard if settings.shards > 1 and settings.shard_bootstrap == "own" else -1
    if shard >= 0:   # a shard's bootstrap: its users only, their counts captured to share
        from stream_app.deltas import DeltaBuffer
        from stream_app.shards import user_topics

        engine.cooc.capture = DeltaBuffer()
        theirs = set(user_topics(settings))
    us, its, vs = [], [], []
    out = Replayed(engine, np.empty(0, np.int32), np.empty(0, np.int32),
                   np.empty(0, np.float32))
    for chunk in read_topics(settings, topics, progress=progress, desc="replaying topics",
                             until_time=until_time):
        if shard >= 0:
            chunk = [r for r in chunk
                     if r.topic not in theirs or r.partition % settings.shards == shard]
        if since is not None:
            chunk = _drop_older(chunk, settings, since, engine)
        res = process_records(engine, chunk, settings, train=False)
        out.invalid.extend(res.invalid)
        us.append(res.users)
        its.append(res.items)
        vs.append(res.values)
        out.records += len(chunk)
    if us:
        out.users, out.items, out.values = (np.concatenate(x) for x in (us, its, vs))
    return out


def _drop_older(chunk: list[Record], settings: Settings, since: float,
                engine: Engine) -> list[Record]:
    kept = []
    for rec in chunk:
        if rec.topic == settings.topic_interactions:
            ts = rec.timestamp
            try:
                doc = orjson.loads(rec.value) if rec.value else None
                if isinstance(doc, dict) and isinstance(doc.get("timestamp"), (int, float)):
                    ts = float(doc["timestamp"])
            except orjson.JSONDecodeError:
                pass
            if ts < since:
                engine.advance(rec.topic, rec.partition, rec.offset)
                continue
        kept.append(rec)
    return kept


def fit_full(engine: Engine, users: np.ndarray, items: np.ndarray, values: np.ndarray,
             epochs: int, progress: bool = True, desc: str = "training") -> None:
    """``epochs`` full passes over every interaction, with a progress bar per epoch."""
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=epochs, desc=desc, unit="epoch", disable=None)
    engine.fit_all(epochs, users, items, values, on_epoch=(lambda _e: bar.update(1)) if bar
                   else None)
    if bar is not None:
        bar.close()


def holdout_metrics(engine: Engine, train: tuple[np.ndarray, np.ndarray],
                    test: tuple[np.ndarray, np.ndarray], k: int = 10) -> dict[str, float]:
    """precision@k / recall@k / hit-rate@k of held-out positives, train items excluded."""
    tu, ti = train
    hu, hi = test
    if len(hu) == 0:
        return {}
    seen: dict[int, set[int]] = {}
    for u, i in zip(tu.tolist(), ti.tolist()):
        seen.setdefault(u, set()).add(i)
    wanted: dict[int, set[int]] = {}
    for u, i in zip(hu.tolist(), hi.tolist()):
        if i not in seen.get(u, ()):
            wanted.setdefault(u, set()).add(i)
    if not wanted:
        return {}
    from stream_app.topn import top_n

    rows = np.array(sorted(wanted), dtype=np.int64)
    picked = top_n(engine.model.scores(rows), k, len(engine.items),
                   [seen.get(int(r), ()) for r in rows])
    hits = [len(set(p[0].tolist()) & wanted[int(r)]) for r, p in zip(rows, picked)]
    return {"precision_at_k": float(np.mean([h / k for h in hits])),
            "recall_at_k": float(np.mean([h / len(wanted[int(r)]) for h, r in zip(hits, rows)])),
            "hit_rate_at_k": float(np.mean([h > 0 for h in hits])),
            "users": len(rows), "k": k}


def train_engine(settings: Settings, replayed: Replayed, holdout: float = 0.0,
                 progress: bool = True) -> dict[str, float]:
    """Fit the replayed engine; with ``holdout`` evaluate on the newest positives first."""
    u, i, v = replayed.users, replayed.items, replayed.values
    metrics: dict[str, float] = {}
    cut = int(len(u) * (1 - holdout)) if holdout > 0 else len(u)
    fit_full(replayed.engine, u[:cut], i[:cut], v[:cut], settings.epochs_bootstrap, progress)
    if cut < len(u):
        pos = v[cut:] > 0
        metrics = holdout_metrics(replayed.engine, (u[:cut], i[:cut]),
                                  (u[cut:][pos], i[cut:][pos]))
        replayed.engine.model.fit_partial(u[cut:], i[cut:], v[cut:],
                                          epochs=settings.epochs_per_batch,
                                          num_threads=settings.num_threads)
    return metrics


def snapshot_offsets(settings: Settings) -> dict[str, int]:
    """Reported end offsets of the worker's topics (Tansu: a lower bound after batched
    produce; exact for the control topic, which gets one record per produce)."""
    from confluent_kafka import Consumer, TopicPartition

    from streamrec.kafka import consumer_config
    from streamrec.replay import topic_partitions

    c = Consumer(consumer_config(settings, f"streamrec-snapshot-{uuid.uuid4().hex[:6]}"))
    try:
        out = {}
        for t in (settings.topic_users, settings.topic_items, settings.topic_interactions,
                  settings.topic_released, settings.topic_control):
            for p in topic_partitions(c, t):
                out[f"{t}:{p}"] = c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
        return out
    finally:
        c.close()


def run_retrain(settings: Settings, since: float | None = None, dry_run: bool = False,
                holdout: float = 0.02, progress: bool = True) -> dict:
    """Replay, train, evaluate; unless ``dry_run``, write a versioned checkpoint under
    ``STATE_DIR/retrain/VERSION`` and announce it on the control topic for the worker."""
    t0 = time.perf_counter()
    replayed = _patiently(settings, "replay", lambda: replay_into_engine(
        settings, since=since, progress=progress, until_time=time.time()))
    engine = replayed.engine
    metrics = train_engine(settings, replayed, holdout=holdout, progress=progress)
    result = {"records": replayed.records, "interactions": int(len(replayed.users)),
              "users": len(engine.users), "items": len(engine.items),
              "offsets": dict(engine.offsets), "holdout": metrics,
              "model_version": engine.model_version, "train_s": time.perf_counter() - t0}
    if dry_run or not replayed.records:
        result["announced"] = False
        return result
    version = engine.created.replace(":", "") + "-" + uuid.uuid4().hex[:6]
    root = Path(settings.state_dir) / "retrain" / version
    store = WorkerStore(root)
    try:
        store.checkpoint(engine)
    finally:
        store.close()
    message = {"type": "model", "version": version, "path": str(root.resolve()),
               "offsets": engine.offsets, "holdout": {k: float(v) for k, v in metrics.items()}}
    _patiently(settings, "announce", lambda: announce(settings, message))
    result.update(announced=True, version=version, path=str(root))
    return result


def _patiently(settings: Settings, what: str, step):
    """Run ``step``; a broker that goes away meanwhile, or answers with a transient error
    (a partition without a leader yet), is waited for and the step begins again (up to
    ``broker_wait_s``; 0: as long as it takes)."""
    from tenacity import (Retrying, retry_if_exception, stop_after_delay, stop_never,
                          wait_exponential)

    from streamrec.kafka import broker_away

    wait = settings.broker_wait_s
    retrying = Retrying(retry=retry_if_exception(broker_away), reraise=True,
                        wait=wait_exponential(multiplier=1, max=30),
                        stop=stop_after_delay(wait) if wait else stop_never,
                        before_sleep=lambda st: log.warning(
                            "retrain %s interrupted (%s); starting it again", what,
                            st.outcome.exception()))
    return retrying(step)


def announce(settings: Settings, message: dict) -> None:
    """Send a control message, signed with ``control_key`` when it is set."""
    from confluent_kafka import Producer

    from streamrec.control import sign

    key = settings.control_key.get_secret_value() if settings.control_key else None
    p = Producer(producer_config(settings))
    p.produce(settings.topic_control, key=b"model", value=sign(message, key))
    left = p.flush(30)
    if left:
        from streamrec.errors import BrokerUnavailable
        raise BrokerUnavailable("could not announce the new model on "
                                f"{settings.topic_control}; the worker did not get it")
