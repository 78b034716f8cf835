"""Prometheus metrics of the worker (served on ``worker_metrics_port``)."""

import gc
import time

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("streamrec_worker_events_total", "Records seen by the worker, by outcome",
                 ["outcome"])
BATCHES = Counter("streamrec_worker_batches_total", "Micro-batches applied")
BATCH_SECONDS = Histogram("streamrec_worker_batch_seconds",
                          "Wall time of one micro-batch (train + top-N + publish)",
                          buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
HOP_BUCKETS = (.0005, .001, .002, .003, .005, .0075, .01, .015, .02, .03, .05, .1, .25, .5, 1,
               2.5, 5, 10)
"""Fine below 20 ms: a list must follow its user's events within a few ms (evaluation.md)."""
INGEST_DELAY = Histogram("streamrec_worker_ingest_delay_seconds",
                         "Record timestamp (the producer's create time) to the start of the "
                         "micro-batch that applies it: the broker hop plus any queueing",
                         buckets=HOP_BUCKETS)
BATCH_SIZE = Histogram("streamrec_worker_batch_records", "Records per micro-batch",
                       buckets=(1, 5, 10, 50, 100, 500, 1000, 5000, 10000))
LISTS = Counter("streamrec_worker_lists_published_total", "Recommendation lists published")
LISTS_PENDING = Gauge("streamrec_worker_lists_pending",
                      "Users whose newest applied events are not yet in a published list "
                      "(0: every applied event is reflected in a published list)")
LIST_WAIT = Histogram("streamrec_worker_list_wait_seconds",
                      "From the first event a list lacks being applied to the list being "
                      "published: 0 when caught up, up to list_max_delay_s under load",
                      buckets=HOP_BUCKETS)
EVENT_TO_LIST = Histogram("streamrec_worker_event_to_list_seconds",
                          "From an event's record timestamp (when it was produced) to the "
                          "list reflecting it being published: the worker's share of freshness",
                          buckets=HOP_BUCKETS)
CONSUMER_LAG = Gauge("streamrec_worker_consumer_lag",
                     "Records in each input partition not yet in the worker's state (high "
                     "watermark of the last fetch minus the state's offset)",
                     ["topic", "partition"])
CHECKPOINTS = Counter("streamrec_worker_checkpoints_total", "State checkpoints written")
CHECKPOINT_SECONDS = Histogram("streamrec_worker_checkpoint_seconds",
                               "Checkpoint time: 'snapshot' on the event loop between "
                               "micro-batches (copies of the state), 'write' in the "
                               "background thread (files, fsync, RocksDB batch)", ["phase"],
                               buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                                        5.0, 10.0, 30.0))
CHECKPOINT_ERRORS = Counter("streamrec_worker_checkpoint_errors_total",
                            "Checkpoint writes that failed (the next one rewrites everything)")
GC_PAUSE = Histogram("streamrec_worker_gc_pause_seconds",
                     "Python garbage-collector pauses of the worker process",
                     buckets=HOP_BUCKETS)
KNOWN = Gauge("streamrec_worker_known", "Assigned ids", ["side"])
CAPACITY = Gauge("streamrec_worker_capacity", "Model rows (assigned + dummy padding)", ["side"])
PRODUCE_ERRORS = Counter("streamrec_worker_produce_errors_total",
                         "Records the worker failed to publish", ["topic"])
APPLIED_TOTAL = Gauge("streamrec_worker_state_applied_events",
                      "Interaction events in the model state since it was created (survives "
                      "restarts: a loss or a double application shows here)")
CONTROL_REFUSED = Counter("streamrec_worker_control_refused_total",
                          "Control messages refused (invalid, unsigned or forged, or naming a "
                          "model outside STATE_DIR/retrain/); each went to the dead-letter topic")
SWAPS = Counter("streamrec_worker_model_swaps_total", "Retrained models swapped in", ["result"])
READY = Gauge("streamrec_worker_ready", "1 once the worker streams (after restore/bootstrap)")
QUARANTINED = Counter("streamrec_worker_quarantined_total",
                      "Events held back by the fraud/bot guard", ["reason"])
GUARD_FLAGGED = Gauge("streamrec_worker_guard_flagged", "Users/items quarantined now", ["kind"])


def watch_gc() -> None:
    """Time every garbage-collector run into :data:`GC_PAUSE` (a full collection over
    millions of per-user objects stalls every list behind it)."""
    started = [0.0]

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            GC_PAUSE.observe(time.perf_counter() - started[0])

    if callback not in gc.callbacks:
        gc.callbacks.append(callback)
DELTAS = Counter("streamrec_worker_item_deltas_total",
                 "Sharded workers: item deltas by outcome (produced: own, acknowledged; "
                 "applied / duplicate: other shards'; refused: invalid or forged, to the "
                 "dead-letter topic)", ["outcome"])
SHARDS = Gauge("streamrec_worker_shards_running",
               "Sharded workers: shard processes this supervisor runs now")
SHARDS_TOTAL = Gauge("streamrec_worker_shards",
                     "Sharded workers: shards of the deployment (STREAMREC_SHARDS); an alert "
                     "compares it with the shards running over all supervisors")
