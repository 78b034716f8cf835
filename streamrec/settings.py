"""All configuration in one frozen, typed object.

Values come from (highest first) CLI flags, environment variables (``STREAMREC_*``, plus
``KAFKA_BOOTSTRAP_SERVERS``), then the defaults written here once.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamrec.errors import ConfigError

log = logging.getLogger(__name__)

EVENT_WEIGHTS_DEFAULT: dict[str, float] = {
    "view": 0.5,
    "click": 1.0,
    "add_to_cart": 2.0,
    "purchase": 3.0,
    "like": 2.0,
    "dislike": 0.0,
    "rating": 1.0,
}

Loss = Literal["warp", "bpr", "logistic", "warp-kos"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def _default_state_dir() -> Path:
    return Path(os.environ.get("STREAMREC_STATE_DIR", ".streamrec"))


OTHER_ENV = frozenset({"STREAMREC_LOG_LEVEL", "STREAMREC_CACHE_DIR",
                       "STREAMREC_MAVEN_REPOSITORY", "STREAMREC_TEST_BROKER",
                       "STREAMREC_KAFKA_DEBUG"})
"""``STREAMREC_*`` variables that are read elsewhere, not settings (log level, the jar cache
and its Maven mirror, the test suite's broker choice)."""

_PREFIX = "STREAMREC_"
_warned_env: set[str] = set()


def unknown_env_vars(environ: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """``(variable, closest known variable or None)`` for every ``STREAMREC_*`` variable in
    ``environ`` (default ``os.environ``) that no setting and no other code reads: a typo
    there is otherwise silently ignored (pydantic-settings drops unknown names)."""
    environ = os.environ if environ is None else environ
    known = {_PREFIX + name.upper() for name in Settings.model_fields} | OTHER_ENV
    for field in Settings.model_fields.values():
        if isinstance(field.validation_alias, AliasChoices):
            known |= {c.upper() for c in field.validation_alias.choices
                      if isinstance(c, str) and c.upper().startswith(_PREFIX)}
    suffixes = {k[len(_PREFIX):]: k for k in known}
    out = []
    for var in sorted(environ):
        name = var.upper()
        if not name.startswith(_PREFIX) or name in known:
            continue
        close = difflib.get_close_matches(name[len(_PREFIX):], list(suffixes), n=1)
        out.append((var, suffixes[close[0]] if close else None))
    return out


def warn_unknown_env(environ: Mapping[str, str] | None = None) -> None:
    """Log a warning per unknown ``STREAMREC_*`` variable, once per process and name."""
    for var, close in unknown_env_vars(environ):
        if var in _warned_env:
            continue
        _warned_env.add(var)
        hint = f"; did you mean {close}?" if close else ""
        log.warning("environment variable %s is not a streamrec setting and is ignored%s",
                    var, hint)


_SSL_PROTOCOLS = ("SSL", "SASL_SSL")
_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


def _security_problem(s: "Settings") -> str | None:
    """What is wrong with the TLS / SASL settings as a whole, or None."""
    proto = s.security_protocol
    env = f"STREAMREC_SECURITY_PROTOCOL={proto}"
    if proto in _SASL_PROTOCOLS:
        if not s.sasl_mechanism:
            return (f"{env} needs STREAMREC_SASL_MECHANISM (PLAIN, SCRAM-SHA-256 or "
                    "SCRAM-SHA-512)")
        missing = [v for v, val in (("STREAMREC_SASL_USERNAME", s.sasl_username),
                                    ("STREAMREC_SASL_PASSWORD", s.sasl_password)) if not val]
        if missing:
            return (f"{env} with {s.sasl_mechanism} needs STREAMREC_SASL_USERNAME and "
                    f"STREAMREC_SASL_PASSWORD; missing: {', '.join(missing)}")
    else:
        stray = [v for v, val in (("STREAMREC_SASL_MECHANISM", s.sasl_mechanism),
                                  ("STREAMREC_SASL_USERNAME", s.sasl_username),
                                  ("STREAMREC_SASL_PASSWORD", s.sasl_password)) if val]
        if stray:
            return (f"{', '.join(stray)} set, but {env} does not authenticate: set "
                    "STREAMREC_SECURITY_PROTOCOL to SASL_SSL (or SASL_PLAINTEXT)")
    files = (("STREAMREC_SSL_CA_LOCATION", s.ssl_ca_location),
             ("STREAMREC_SSL_CERTIFICATE_LOCATION", s.ssl_certificate_location),
             ("STREAMREC_SSL_KEY_LOCATION", s.ssl_key_location))
    if proto not in _SSL_PROTOCOLS:
        stray = [v for v, val in (*files, ("STREAMREC_SSL_KEY_PASSWORD", s.ssl_key_password))
                 if val]
        if stray:
            return (f"{', '.join(stray)} set, but {env} does not use TLS: set "
                    "STREAMREC_SECURITY_PROTOCOL to SSL or SASL_SSL")
        return None
    if bool(s.ssl_certificate_location) != bool(s.ssl_key_location):
        return ("a client certificate needs both STREAMREC_SSL_CERTIFICATE_LOCATION and "
                "STREAMREC_SSL_KEY_LOCATION")
    for var, path in files:
        if path and not (var == "STREAMREC_SSL_CA_LOCATION" and path == "probe") \
                and not Path(path).is_file():
            return f"{var}={path}: no such file"
    return None


class Settings(BaseSettings):
    """Every knob of streamrec. Create with ``Settings(**overrides)``; it is immutable."""

    model_config = SettingsConfigDict(env_prefix="STREAMREC_", frozen=True, extra="ignore")

    # --- Kafka ---------------------------------------------------------------------------
    bootstrap_servers: str = Field(
        "localhost:9092",
        validation_alias=AliasChoices("bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS",
                                      "STREAMREC_BOOTSTRAP_SERVERS"),
    )
    security_protocol: SecurityProtocol = Field(
        "PLAINTEXT", description="how every Kafka client of ours connects (librdkafka, and "
        "Faust's aiokafka with ingest=agent): SSL and SASL_SSL encrypt, SASL_* authenticate")
    sasl_mechanism: SaslMechanism | None = Field(
        None, description="required with SASL_SSL / SASL_PLAINTEXT")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = Field(
        None, description="PEM file of the CA(s) that signed the brokers' certificates "
        "(default: the system's CAs)")
    ssl_certificate_location: str | None = Field(
        None, description="PEM client certificate (chain), for brokers that require one")
    ssl_key_location: str | None = Field(None, description="PEM private key of that "
                                         "certificate")
    ssl_key_password: SecretStr | None = Field(None, description="if that key is encrypted")
    ssl_endpoint_identification: Literal["https", "none"] = Field(
        "https", description="https: a broker's certificate must name the host we connect "
        "to; none: any certificate the CA signed is accepted (the chain is still checked)")
    topic_interactions: str = "interactions"
    topic_items: str = "items"
    topic_users: str = "users"
    topic_recommendations: str = "recommendations"
    topic_dlq: str = "interactions.dlq"
    topic_quarantine: str = "interactions.quarantine"
    topic_control: str = "streamrec.control"
    topic_released: str = "interactions.released"
    partitions: int = Field(1, ge=1, description="partitions of topics streamrec creates")
    replication_factor: int = Field(1, ge=1)
    session_timeout_ms: int = Field(6000, ge=1000,
                                    description="small: Tansu joins take half of it")
    compaction_segment_ms: int = Field(600_000, ge=100,
                                       description="segment roll of compacted topics")
    worker_group: str = "streamrec-worker"
    fetch_wait_ms: int = Field(
        500, ge=1, description="fetch.wait.max.ms of the worker's and the lookup's consumers. "
        "Apache Kafka answers a waiting fetch as soon as data arrives, so a long wait costs no "
        "freshness and spares the idle fetches (10 ms: 100 empty fetches/s per consumer). "
        "Tansu answers only when it expires, so with Tansu it is 10 (TansuBroker."
        "client_settings; docs/latency-notes.md)")
    list_before_fit: bool = Field(
        True, description="a live micro-batch's lists are built after its counts, transitions "
        "and seen items are updated but before its LightFM step, which runs once they are "
        "sent: lists ~0.4 ms sooner (the step is ~15 % of the worker's time), without that "
        "one event in the LightFM part; the state afterwards is the same. Live hit@10 within "
        "0.005 of in-process on both data sets only with it on: power-user stream +0.0019 "
        "(median of 6 pairs), ML-100K -0.0028 (docs/evaluation.md, 'Lists before the "
        "LightFM step'); false suits a base of light users only")
    list_linger_ms: float = Field(
        0, ge=0, description="linger.ms of the worker's list producer: 0 sends a list as soon "
        "as it is computed (under load librdkafka still batches while requests are in "
        "flight); a linger delays every list and costs live hit@10 (measured: "
        "docs/evaluation.md)")
    idempotent_producers: bool = Field(
        True, description="librdkafka idempotence for every producer of ours (no duplicates "
        "on retries). On the embedded Tansu broker each idempotent produce rewrites one shared "
        "producer-state object, which stalls concurrent producers (docs/latency-notes.md)")
    broker_wait_s: float = Field(
        0, ge=0, description="how long a process waits for an unreachable broker before it "
        "gives up (0: as long as it takes, retrying with backoff and saying so in the log)")

    control_key: SecretStr | None = Field(
        None, description="HMAC key of control messages (model swaps, guard releases): when "
        "set, the worker refuses every control message not signed with it, and retrain and "
        "release sign theirs (SECURITY.md)")

    # --- state ---------------------------------------------------------------------------
    state_dir: Path = Field(default_factory=_default_state_dir)

    # --- model ---------------------------------------------------------------------------
    loss: Loss = "warp"
    no_components: int = Field(30, ge=1)
    learning_rate: float = Field(0.05, gt=0)
    item_alpha: float = Field(0.0, ge=0)
    user_alpha: float = Field(0.0, ge=0)
    max_sampled: int = Field(10, ge=1)
    epochs_bootstrap: int = Field(30, ge=1, description="epochs of a full fit (bootstrap, retrain)")
    epochs_per_batch: int = Field(10, ge=1, description="fit_partial epochs per micro-batch "
                                  "(chosen by prequential hit@10 and the seed protocol: "
                                  "docs/evaluation.md)")
    num_threads: int = Field(1, ge=1, description="LightFM threads per micro-batch: OpenMP "
                             "threads spin on a busy small box, so more threads make small "
                             "batches slower (docs/benchmarks.md)")
    blas_threads: int = Field(1, ge=1, description="BLAS (OpenBLAS) threads of the worker's "
                              "score products. Its threads spin while they wait: on a small box "
                              "they take the CPU the broker and the lookup need and slow the "
                              "micro-batches down (docs/latency-notes.md)")
    fit_threads: int = Field(2, ge=1, description="LightFM threads for full fits "
                             "(bootstrap, retrain)")
    random_seed: int = 42
    padding_fraction: float = Field(0.10, ge=0)
    padding_min: int = Field(100, ge=1)
    growth_factor: float = Field(1.5, gt=1.0)
    user_feature_buckets: int = Field(256, ge=1, description="hashed metadata columns, users")
    item_feature_buckets: int = Field(256, ge=1, description="hashed metadata columns, items")
    feature_weight: float = Field(0.5, ge=0, description="weight of metadata vs identity")
    rating_threshold: float = 3.0
    cooc_weight: float = Field(0.2, ge=0, le=1, description="share of the item-item "
                               "co-occurrence score blended into LightFM's (0: off); chosen "
                               "with trans_weight on held-out time (docs/evaluation.md)")
    cooc_alpha: float = Field(0.7, ge=0, le=1, description="asymmetric cosine exponent")
    cooc_recent: int = Field(20, ge=1, description="a user's last positives that score items")
    cooc_pair_window: int = Field(20, ge=1, description="earlier positives a new one pairs with")
    trans_weight: float = Field(0.2, ge=0, le=1, description="share of the order-aware "
                                "transition score (what followed the user's last positives in "
                                "other users' sequences; stream_app/transitions.py) in the "
                                "blend with LightFM and co-occurrence (0: not blended); chosen "
                                "with cooc_weight on held-out time (docs/evaluation.md)")
    trans_window: int = Field(5, ge=0, description="a positive counts as following each of "
                              "the user's previous this-many positives, weight 1 / steps "
                              "(0: transitions not counted)")
    trans_decay: float = Field(0.6, gt=0, le=1, description="weight of the k-th newest "
                               "positive in a user's transition scores: decay ** k")
    trans_recent: int = Field(5, ge=1, description="a user's last positives whose "
                              "transitions score items")
    trans_dense_items: int = Field(
        4_096, ge=1, description="transition counts stay a dense matrix up to this many item "
        "rows (64 MB at the default), bounded sparse counts beyond (pruned to "
        "cooc_max_neighbours per item): a positive adds at most trans_window of them")
    cooc_dense_items: int = Field(
        16_384, ge=1, description="co-occurrence counts stay a dense matrix up to this many "
        "item rows (1 GB at the default), sparse rows beyond (a dense 100 k catalogue would "
        "need 40+ GB; bench/scale.py)")
    cooc_max_neighbours: int = Field(
        200, ge=0, description="beyond cooc_dense_items, the co-occurrence counts each item "
        "keeps after a merge (its strongest co-liked items; 0: unbounded). Memory is "
        "O(items x this): 8 B per count plus pending deltas up to half as many; unbounded "
        "counts grow faster than the positives (measured: bench/state_scale.py, "
        "docs/benchmarks.md)")
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(EVENT_WEIGHTS_DEFAULT))

    # --- exploration (stream_app/explore.py; trade-off curve in docs/evaluation.md) ------
    explore_share: float = Field(
        0.05, ge=0, le=1, description="share of list slots given to items the model is unsure "
        "about, marked \"reason\": \"explore\" (0: off): a little hit@10 for much more "
        "catalogue coverage and new items shown; chosen from the prequential trade-off "
        "curve (docs/evaluation.md, \"Exploration: price and gain\")")
    explore_temperature: float = Field(
        2.0, gt=0, description="sampling temperature on the z-scored model score of "
        "exploration candidates (weight exp(z / T) / sqrt(1 + positives)): low keeps "
        "exploration near the top of the ranking, high spreads it to new and long-tail items "
        "(the curve per temperature: docs/evaluation.md)")
    explore_protect_top: int = Field(3, ge=0, description="the first list positions never "
                                     "explored")
    explore_sample: int = Field(256, ge=0, description="candidate path (large catalogues): "
                                "items drawn uniformly per list as exploration candidates, "
                                "besides the model's best and the co-occurrence neighbours")

    # --- large catalogues: candidates instead of a full scan (stream_app/candidates.py) ---
    ann_min_items: int = Field(
        20_000, ge=0, description="from this many items on, lists score candidates (IVF "
        "index over the item vectors + co-occurrence neighbours) instead of every item "
        "(0: always exact): below it an exact scan is as fast, above it the index is faster "
        "and its recall stays near 1 (measured: bench/ann.py, docs/benchmarks.md)")
    ann_candidates: int = Field(0, ge=0, description="model candidates per list (0: "
                                "max(1000, 8 sqrt(items)), ~32 of the 4 sqrt(items) lists)")

    # --- fraud / bot guard (stream_app/guard.py; thresholds measured in docs/guard-notes.md)
    # None: the measured default written once in GuardConfig.
    guard_enabled: bool = True
    guard_user_max_events: int | None = Field(None, ge=1)
    guard_pace_max_rate: float | None = Field(None, gt=0)
    guard_pair_max_events: int | None = Field(None, ge=1)
    guard_item_burst_share: float | None = Field(None, gt=0, le=1)
    guard_new_user_age_s: float | None = Field(None, gt=0)
    guard_quarantine_ttl_s: float | None = Field(None, gt=0)
    guard_history_max_events: int | None = Field(None, ge=1)
    guard_history_after_s: float | None = Field(None, gt=0)

    # --- worker --------------------------------------------------------------------------
    ingest: Literal["agent", "batch"] = Field(
        "batch", description="agent: a Faust agent with take_events; batch: a Faust task "
                             "reading whole fetch batches with librdkafka (faster)")
    max_batch: int = Field(2000, ge=1, description="events per micro-batch at most")
    batch_window_s: float = Field(0.05, gt=0, description="agent: wait at most this for a "
                                  "batch to fill (batch ingest never waits for a batch)")
    shards: int = Field(
        1, ge=1, description="user-sharded workers (docs/scaling.md): shard k of N owns the "
        "users of the interactions and users partitions p with p % N == k, and shares the "
        "item side with the other shards through item_deltas_topic. 1: one worker owns "
        "everything (the default). With N > 1, `streamrec worker` supervises the shards whose "
        "leases the consumer group gives it, each in its own process and state dir "
        "STATE_DIR/shard-k (on storage every worker reaches)")
    shard: int = Field(-1, ge=-1, description="set by the supervisor for a shard's process "
                       "(-1: this process is not one shard)")
    item_deltas_topic: str = Field(
        "streamrec.item-deltas", description="sharded workers: each shard's item-side count "
        "changes (co-occurrence, transitions, positives), sequence-numbered, read by every "
        "other shard (created if missing; one partition, delete retention)")
    shard_leases_topic: str = Field(
        "streamrec.shard-leases", description="sharded workers: one partition per shard; "
        "the consumer group worker_group + '-leases' assigns them, and holding partition k "
        "means running shard k (created if missing)")
    shard_bootstrap: Literal["all", "own"] = Field(
        "all", description="sharded workers, first start on an existing history: all: each "
        "shard trains its model on every user's events (one full bootstrap's time and memory, "
        "once), then keeps its own users, so every shard starts in the same latent space "
        "(simulated: +0.0004 hit@10 at N = 4); own: each shard reads and trains on its own "
        "users only (1/N of the work; measured +0.0094 at N = 4: docs/scaling.md)")
    delta_interval_s: float = Field(
        1.0, gt=0, description="sharded workers: item-side changes are published this often "
        "(the simulation: 1 s costs ~0.005 hit@10 after a long run, 10 s ~0.009)")
    top_n: int = Field(20, ge=1, description="length of stored lists")
    list_max_delay_s: float = Field(
        30.0, ge=0, description="under load (a backlog of records waits), a user's list "
        "waits as long as the input lags, up to this long, so the user's events in that "
        "time cost one list; caught up, lists go out at once. The model keeps learning at "
        "full speed while lists catch up (stream_app/worker.py; load curve in "
        "docs/benchmarks.md)")
    list_slice_s: float = Field(0.1, gt=0, description="publishing pending lists yields to "
                                "new events after this long")
    fallback_interval_s: float = Field(0.5, ge=0, description="the popular fallback list is "
                                       "republished at most this often")
    checkpoint_interval_s: float = Field(5.0, gt=0)
    refresh_rate: float = Field(2000, gt=0, description="lists/s republished after a swap")
    dedup_window: int = Field(1_000_000, ge=0, description="event_ids remembered for dedup")
    popular_window: int = Field(5000, ge=10, description="recent positives behind the fallback")
    worker_metrics_port: int = Field(9464, ge=0, description="Prometheus port; 0: off")

    # --- lookup API ----------------------------------------------------------------------
    http_host: str = "127.0.0.1"
    api_token: SecretStr | None = Field(
        None, description="if set, every lookup API request but /healthz and /readyz needs "
        "'Authorization: Bearer <token>' (401 otherwise); off by default, on in compose")
    http_port: int = 8000
    http_max_connections: int = Field(
        4096, ge=1, description="lookup API: connections or requests in flight beyond this "
        "are answered 503 at once")
    http_header_timeout_s: float = Field(
        10.0, gt=0, description="lookup API: a request's headers must be complete this long "
        "after its first byte, else the connection is closed (slowloris)")
    http_keepalive_s: float = Field(5.0, gt=0, description="lookup API: idle keep-alive "
                                    "connections are closed after this")
    default_n: int = 10
    gil_switch_ms: float = Field(
        1.0, gt=0, description="worker and lookup: how long a Python thread may hold the "
        "interpreter lock before another gets it (sys.setswitchinterval; Python's default "
        "5 ms made the lookup's consumer thread the whole p99 of an HTTP answer)")
    lookup_commit_group: str = Field(
        "", description="if set, the lookup commits its positions on recommendations under "
        "this consumer group (it never joins it), so standard lag tools see how far behind "
        "it is; empty: no commits")
    lookup_seen_filter: bool = Field(
        True, description="the lookup also reads interactions and drops from a user's list "
        "the items of their recent events until the worker's new list arrives "
        "(consumers/seen.py): it raises hit@10 while lists lag the stream (measured: "
        "bench/lag.py, docs/evaluation.md)")
    lookup_seen_users: int = Field(100_000, ge=1, description="users whose recent items the "
                                   "lookup remembers (least recently active dropped first)")
    lookup_seen_per_user: int = Field(64, ge=1, description="recent items kept per user")
    lookup_mode: Literal["replica", "partitioned"] = Field(
        "replica", description="replica: every lookup reads every partition of "
        "recommendations (a full copy; run as many as you like, each with its own state dir "
        "and port). partitioned: lookups share the partitions in the consumer group "
        "lookup_group, each stores only its own, and a request for another replica's user is "
        "forwarded to it (consumers/partitioned.py; docs/scaling.md)")
    lookup_group: str = Field(
        "streamrec-lookup", description="partitioned lookups: their consumer group on "
        "recommendations (every replica of one deployment uses the same)")
    lookup_advertised_url: str = Field(
        "", description="partitioned lookups: the base URL other replicas forward requests "
        "to, unique per replica (empty: http://<http_host>:<http_port>)")
    lookup_members_topic: str = Field(
        "streamrec.lookup.members", description="partitioned lookups: compacted topic where "
        "each replica publishes its URL and partitions on every assignment (created if "
        "missing)")
    lookup_forward_timeout_s: float = Field(
        1.0, gt=0, description="partitioned lookups: a forwarded request not answered within "
        "this is answered here with the fallback list")

    # --- data ----------------------------------------------------------------------------
    data_url: str = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"

    @property
    def topics(self) -> list[str]:
        """Every topic of the contract, in the order they are created."""
        return [self.topic_interactions, self.topic_items, self.topic_users,
                self.topic_recommendations, self.topic_dlq, self.topic_quarantine,
                self.topic_control, self.topic_released]

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        """``sasl_ssl`` and ``scram-sha-256`` work too (librdkafka takes any case)."""
        if isinstance(v, str):
            return v.strip().upper() or None
        return v

    @field_validator("ssl_ca_location", "ssl_certificate_location", "ssl_key_location",
                     "sasl_username", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v

    @model_validator(mode="after")
    def _check_security(self) -> "Settings":
        problem = _security_problem(self)
        if problem:
            raise ConfigError(problem)
        if self.shards > 1 and self.ingest != "batch":
            raise ConfigError("sharded workers (STREAMREC_SHARDS > 1) need STREAMREC_INGEST="
                              "batch: a shard assigns itself its partitions")
        if self.shard >= self.shards:
            raise ConfigError(f"STREAMREC_SHARD={self.shard} but there are {self.shards} "
                              "shards (0 .. shards-1)")
        return self

    def model_post_init(self, context: Any, /) -> None:
        warn_unknown_env()

    def kafka_common(self) -> dict[str, str]:
        """librdkafka settings every client of ours shares (security, bootstrap). Holds the
        secrets in clear: hand it to a client, never to a log."""
        conf = {"bootstrap.servers": self.bootstrap_servers,
                "security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.security_protocol in _SSL_PROTOCOLS:
            for key, value in (("ssl.ca.location", self.ssl_ca_location),
                               ("ssl.certificate.location", self.ssl_certificate_location),
                               ("ssl.key.location", self.ssl_key_location)):
                if value:
                    conf[key] = value
            if self.ssl_key_password:
                conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
            conf["ssl.endpoint.identification.algorithm"] = self.ssl_endpoint_identification
        return conf

    def as_env(self) -> dict[str, str]:
        """These settings as ``STREAMREC_*`` variables, to hand to a child process."""
        env = {f"STREAMREC_{k.upper()}": (v.get_secret_value() if isinstance(v, SecretStr)
                                          else str(v))
               for k, v in self.model_dump().items()
               if v is not None and not isinstance(v, dict)}
        env["KAFKA_BOOTSTRAP_SERVERS"] = self.bootstrap_servers
        return env

    def with_overrides(self, **values: object) -> "Settings":
        """A copy with some values replaced (CLI flags); ``None`` means 'keep'."""
        changes = {k: v for k, v in values.items() if v is not None}
        return self.model_copy(update=changes) if changes else self
