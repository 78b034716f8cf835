"""Prometheus metrics of the worker (served on ``worker_metrics_port``)."""

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
CHECKPOINTS = Counter("streamrec_worker_checkpoints_total", "State checkpoints written")
KNOWN = Gauge("streamrec_worker_known", "Assigned ids", ["side"])
CAPACITY = Gauge("streamrec_worker_capacity", "Model rows (assigned + dummy padding)", ["side"])
PRODUCE_ERRORS = Counter("streamrec_worker_produce_errors_total",
                         "Records the worker failed to publish", ["topic"])
APPLIED_TOTAL = Gauge("streamrec_worker_state_applied_events",
                      "Interaction events in the model state since it was created (survives "
                      "restarts: a loss or a double application shows here)")
SWAPS = Counter("streamrec_worker_model_swaps_total", "Retrained models swapped in", ["result"])
READY = Gauge("streamrec_worker_ready", "1 once the worker streams (after restore/bootstrap)")
QUARANTINED = Counter("streamrec_worker_quarantined_total",
                      "Events held back by the fraud/bot guard", ["reason"])
GUARD_FLAGGED = Gauge("streamrec_worker_guard_flagged", "Users/items quarantined now", ["kind"])
