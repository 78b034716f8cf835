"""The chaos scenarios of issue #16, each under a steady stream and read load (see
:mod:`tests.chaos.harness`). ``long=False`` is the short version CI runs; ``bench/chaos.py``
runs the long one and writes the table of ``docs/reliability.md``.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewPartitions

from streamrec.broker.kafka import KafkaBroker
from streamrec.settings import Settings
from tests.chaos.harness import (Account, Reader, Stack, Stream, account, chaos_settings,
                                 lists_check, reads_summary, wait_for, worker_ready,
                                 writing_checkpoint)
from tests.integration.processes import metric

WORKER_START_S = 120


@dataclass
class Ctx:
    """What a scenario's faults act on, and what they note down."""

    s: Settings
    broker: KafkaBroker
    stack: Stack
    stream: Stream
    work: Path
    long: bool
    rng: random.Random
    exempt: list[tuple[float, float]] = field(default_factory=list)
    """Wall-time windows without a lookup or without a broker (reads may fail or be slow)."""
    recover_s: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Result:
    name: str
    account: Account
    reads: dict
    stale_lists: list[str]
    recover_s: list[float]
    exit_codes: dict
    notes: list[str]

    @property
    def ok(self) -> bool:
        return (self.account.lost == 0 and self.account.doubled == 0
                and not self.stale_lists and self.reads["5xx"] == 0)

    def row(self) -> dict:
        a = self.account
        return {"scenario": self.name, "produced": a.produced, "applied": a.applied,
                "lost": a.lost, "doubled": a.doubled,
                "recover_s_max": max(self.recover_s) if self.recover_s else None,
                "recover_s": self.recover_s, "stale_lists": len(self.stale_lists),
                **self.reads, "exit_codes": self.exit_codes, "notes": self.notes}


def applied(s: Settings) -> float:
    return metric(s.worker_metrics_port, "streamrec_worker_state_applied_events")


def run(name: str, broker: KafkaBroker, work: Path, faults: Callable[[Ctx], None],
        long: bool = False, rate: float = 1000.0, settle_s: float = 2.0) -> Result:
    """Start a stack, stream and read, run ``faults``, then account for every event."""
    work = work / name
    work.mkdir(parents=True, exist_ok=True)
    s = chaos_settings(broker.bootstrap, work)
    stack = Stack(s, work)
    stream = Stream(s, rate)
    ctx = Ctx(s, broker, stack, stream, work, long, random.Random(name))
    stack.start_lookup()
    stack.start_worker()
    try:
        wait_for(lambda: worker_ready(s), WORKER_START_S, "the worker to stream")
    except AssertionError:
        stack.stop()        # no process outlives a scenario that could not start
        raise
    reader = Reader(s.http_port)
    try:
        stream.start()
        reader.start()
        time.sleep(settle_s)
        faults(ctx)
        time.sleep(settle_s)
        stream.stop()
        try:
            wait_for(lambda: applied(s) >= len(stream.acked), 120, "every event applied",
                     interval=0.2)
            wait_for(lambda: metric(s.worker_metrics_port,
                                    "streamrec_worker_lists_pending") == 0,
                     60, "every list published", interval=0.2)
        except AssertionError as exc:   # the account below says what is missing
            ctx.notes.append(str(exc))
        try:
            wait_for(lambda: _caught_up(s), 60, "the lookup to catch up", interval=0.2)
        except AssertionError as exc:
            ctx.notes.append(str(exc))
        time.sleep(1.0)
        stale = lists_check(s, stream)
    finally:
        reader.stop()
        codes = stack.stop()
    if stream.replaced:
        ctx.notes.append(f"the stream's producer was stuck and replaced {stream.replaced}x")
    return Result(name, account(s, stream), reads_summary(reader, ctx.exempt), stale,
                  ctx.recover_s, codes, ctx.notes)


# ----------------------------------------------------------------------------- faults

def kill_worker(n: int) -> Callable[[Ctx], None]:
    """``kill -9`` the worker ``n`` times: the first during a checkpoint write, the others
    at random moments (lists are being published all the time at this rate); each time a
    supervisor-like restart at once, and the time until it streams again."""
    def faults(ctx: Ctx) -> None:
        for k in range(n):
            time.sleep(ctx.rng.uniform(1.0, 3.0))
            if k == 0:
                wait_for(lambda: writing_checkpoint(ctx.s), 30, "a checkpoint write",
                         interval=0.002)
                ctx.notes.append("kill 1 during a checkpoint write")
            t0 = time.monotonic()
            ctx.stack.kill_worker()
            ctx.stack.start_worker()
            wait_for(lambda: worker_ready(ctx.s), WORKER_START_S, "the restarted worker")
            ctx.recover_s.append(time.monotonic() - t0)
    return faults


def broker_outage(seconds: float) -> Callable[[Ctx], None]:
    """The broker stopped for ``seconds`` and started again on its data dir; recovery is
    until the worker applied every event sent before the restart."""
    def faults(ctx: Ctx) -> None:
        down = time.time()
        ctx.broker.stop()
        time.sleep(seconds)
        t0 = time.monotonic()
        ctx.broker.start()
        sent = ctx.stream.sent
        try:
            wait_for(lambda: applied(ctx.s) >= sent, 300, "the worker to catch up",
                     interval=0.2)
        except AssertionError:
            _dump_stacks(ctx)
            raise
        ctx.recover_s.append(time.monotonic() - t0)
        ctx.exempt.append((down, time.time()))
    return faults


def _dump_stacks(ctx: Ctx) -> None:
    """For the post-mortem of a scenario that did not recover: what a fresh client sees
    (brokers, leaders, ends of the topics), and every thread's stack of the worker and the
    lookup (py-spy, when installed), next to their logs."""
    from confluent_kafka import Consumer, TopicPartition
    lines = []
    try:
        c = Consumer({"bootstrap.servers": ctx.s.bootstrap_servers, "group.id": "postmortem"})
        md = c.list_topics(timeout=10)
        lines.append(f"brokers {sorted(md.brokers)}")
        for t in (ctx.s.topic_interactions, ctx.s.topic_recommendations):
            for p, pm in sorted(md.topics[t].partitions.items()):
                ends = c.get_watermark_offsets(TopicPartition(t, p), timeout=10)
                lines.append(f"{t}[{p}] leader {pm.leader} error {pm.error} ends {ends}")
        c.close()
    except Exception as exc:  # noqa: BLE001 - a post-mortem says what it could not see
        lines.append(f"fresh client failed: {exc!r}")
    lines.append(f"stream sent {ctx.stream.sent} acked {len(ctx.stream.acked)} "
                 f"failed {ctx.stream.failed}")
    (ctx.work / "fresh-client.txt").write_text("\n".join(lines) + "\n")
    if shutil.which("py-spy") is None:
        return
    for name in ("worker", "lookup"):
        proc = getattr(ctx.stack, name)
        if proc is not None and proc.p is not None and proc.alive():
            out = subprocess.run(["py-spy", "dump", "--native", "--pid", str(proc.p.pid)],
                                 capture_output=True, text=True)
            (ctx.work / f"{name}-stacks.txt").write_text(out.stdout + out.stderr)


def lookup_faults(ctx: Ctx) -> None:
    """The lookup killed and restarted; then started while the broker is down (it serves
    its store at once and catches up when the broker comes)."""
    lookup_up = lambda: ctx.stack.lookup is not None and _answers(ctx.s)  # noqa: E731
    down = time.time()
    ctx.stack.lookup.stop(9)
    ctx.stack.start_lookup()
    t0 = time.monotonic()
    wait_for(lookup_up, 60, "the restarted lookup")
    ctx.recover_s.append(time.monotonic() - t0)
    ctx.exempt.append((down, time.time()))
    time.sleep(2.0)
    down = time.time()
    ctx.broker.stop()
    ctx.stack.lookup.stop(9)
    ctx.stack.start_lookup()          # before the broker
    wait_for(lookup_up, 60, "the lookup without a broker")
    time.sleep(3.0)
    ctx.broker.start()
    t0 = time.monotonic()
    wait_for(lambda: _ready(ctx.s), 120, "the lookup to catch up")
    ctx.recover_s.append(time.monotonic() - t0)
    sent = ctx.stream.sent
    wait_for(lambda: applied(ctx.s) >= sent, 300, "the worker to catch up", interval=0.2)
    ctx.exempt.append((down, time.time()))


def checkpoint_failure(ctx: Ctx) -> None:
    """Checkpoint writes fail for a while (the disk full when this process may mount a
    small tmpfs over the models folder, else the folder replaced by a file: writes fail
    with ENOTDIR); then the next checkpoint succeeds (a full one) and the worker is killed
    right after it, while the WAL holds entries appended during that write."""
    models = ctx.s.state_dir / "worker" / "models"
    errors0 = metric(ctx.s.worker_metrics_port, "streamrec_worker_checkpoint_errors_total")
    mounted = _mount_full(models)
    if not mounted:
        aside = models.with_name("models.aside")
        os.rename(models, aside)
        models.write_text("not a folder")
    ctx.notes.append("disk full (tmpfs)" if mounted else "models folder unwritable (a file)")
    try:
        wait_for(lambda: metric(ctx.s.worker_metrics_port,
                                "streamrec_worker_checkpoint_errors_total") > errors0, 30,
                 "a failed checkpoint write", interval=0.1)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(models)], check=True)
        else:
            models.unlink()
            os.rename(aside, models)
    done = metric(ctx.s.worker_metrics_port, "streamrec_worker_checkpoints_total")
    wait_for(lambda: metric(ctx.s.worker_metrics_port, "streamrec_worker_checkpoints_total")
             > done, 30, "a checkpoint after the failure", interval=0.002)
    t0 = time.monotonic()
    ctx.stack.kill_worker()
    ctx.stack.start_worker()
    wait_for(lambda: worker_ready(ctx.s), WORKER_START_S, "the restarted worker")
    ctx.recover_s.append(time.monotonic() - t0)


def partitions_added(ctx: Ctx) -> None:
    """A partition added to ``interactions`` and to ``recommendations`` while running;
    clients see it within their metadata refresh (10 s)."""
    admin = AdminClient(ctx.s.kafka_common())
    futures = admin.create_partitions([NewPartitions(ctx.s.topic_interactions, 3),
                                       NewPartitions(ctx.s.topic_recommendations, 3)])
    for fut in futures.values():
        fut.result(30)
    time.sleep(15.0 if not ctx.long else 60.0)


# ----------------------------------------------------------------------------- helpers

def _answers(s: Settings) -> bool:
    import httpx
    return httpx.get(f"http://127.0.0.1:{s.http_port}/healthz", timeout=1).status_code == 200


def _caught_up(s: Settings) -> bool:
    """The lookup is ready and has no lag left on any lists partition."""
    import httpx
    r = httpx.get(f"http://127.0.0.1:{s.http_port}/readyz", timeout=1)
    return r.status_code == 200 and r.json().get("lag") == 0


def _ready(s: Settings) -> bool:
    import httpx
    return httpx.get(f"http://127.0.0.1:{s.http_port}/readyz", timeout=1).status_code == 200


def can_mount() -> bool:
    """Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"streamrec-mount-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], check=True)
        return ok
    finally:
        probe.rmdir()


def _mount_full(models: Path) -> bool:
    """A 1 MB tmpfs over the models folder: the next model file does not fit."""
    if not can_mount():
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(models)],
                          capture_output=True).returncode == 0


SHORT = {   # what CI runs (~3 min): the same faults, fewer and shorter
    "worker kill -9 x2": kill_worker(2),
    "broker stopped 5 s": broker_outage(5),
    "lookup killed; lookup before the broker": lookup_faults,
    "checkpoint write fails, then kill -9": checkpoint_failure,
    "partitions added": partitions_added,
}
LONG = {
    "worker kill -9 x10": kill_worker(10),
    "broker stopped 10 s": broker_outage(10),
    "broker stopped 60 s": broker_outage(60),
    "lookup killed; lookup before the broker": lookup_faults,
    "checkpoint write fails, then kill -9": checkpoint_failure,
    "partitions added": partitions_added,
}
