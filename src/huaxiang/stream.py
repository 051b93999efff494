"""Live profiles from an event stream: Redis Streams (the default, consumer groups) or Kafka (production).

A message carries one event as JSON in its field `event` (Redis) or its value (Kafka). An event without an
`event_id` gets the message's own id (`redis:<stream>:<entry id>`, `kafka:<topic>:<partition>:<offset>`), so a
message delivered twice is stored once. The consumer stores a batch in one transaction, refreshes the
profiles of the users in it, writes them to the online store (with a writer, `huaxiang.online.writer`), and only
then acknowledges it: killed at any point, it loses nothing (unacknowledged messages are read again) and counts
nothing twice (event ids). With the online writer's live path (`huaxiang.online.live`), a batch is patched online
right after its commit and acknowledged, and its users' profiles are refreshed in rounds beside it.

A Redis entry may instead carry a deletion in its field `forget`: JSON {"user_id": …, "suppress": true|false}, as
the online API queues for DELETE /v1/users/{id}. It is executed in stream order: the events before it are stored
first, those after it later (a suppressed user's later events are refused).

For tests of that claim, env HUAXIANG_CRASH_AT=after_commit|after_refresh|after_online makes the consumer kill
itself with SIGKILL at that point of a batch, once (env HUAXIANG_CRASH_MARKER names a file made when it fires).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

from .errors import HuaxiangError
from .ports import free_port

log = logging.getLogger("huaxiang.stream")


@dataclass
class Message:
    id: str  # the source's own id (Redis entry id; Kafka partition:offset)
    payload: bytes | str | None
    kind: str = "event"  # or "forget": a deletion to execute in stream order; or "exposures": rows shown


class Source(Protocol):
    def read(self, max_messages: int, block_ms: int) -> list[Message]: ...
    def ack(self, messages: list[Message]) -> None: ...
    def rewind(self) -> None: ...  # deliver again what was read but never acknowledged (after a failed batch)
    def default_event_id(self, message: Message) -> str: ...


class RedisSource:
    """XREADGROUP from a consumer group: first this consumer's pending (delivered, never acknowledged) entries —
    what a killed consumer left — then new ones; XACK after the store commit."""

    def __init__(self, url: str, stream: str, group: str = "huaxiang", consumer: str = "consumer-1"):
        import redis
        self.r = redis.Redis.from_url(url)
        self.stream, self.group, self.consumer = stream, group, consumer
        try:
            self.r.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self.pending = True

    def read(self, max_messages: int, block_ms: int) -> list[Message]:
        if self.pending:  # our own unacknowledged entries first
            got = self.r.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=max_messages)
            entries = got[0][1] if got else []
            if entries:
                return [_entry(i, f) for i, f in entries]
            self.pending = False
        got = self.r.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=max_messages, block=block_ms)
        return [_entry(i, f) for i, f in (got[0][1] if got else [])]

    def ack(self, messages: list[Message]) -> None:
        if messages:
            self.r.xack(self.stream, self.group, *[m.id for m in messages])

    def rewind(self) -> None:
        self.pending = True

    def default_event_id(self, message: Message) -> str:
        return f"redis:{self.stream}:{message.id}"


class KafkaSource:
    """The same contract over Kafka (confluent-kafka, `pip install confluent-kafka`): auto-commit off, offsets
    committed after the store commit. `consumer` may be passed in (anything with poll/consume/commit)."""

    def __init__(self, topic: str, config: dict | None = None, consumer=None):
        if consumer is None:
            try:
                from confluent_kafka import Consumer
            except ImportError as exc:
                raise HuaxiangError("the Kafka source needs confluent-kafka: pip install confluent-kafka") from exc
            consumer = Consumer({"group.id": "huaxiang", "auto.offset.reset": "earliest", **(config or {}),
                                 "enable.auto.commit": False})
            consumer.subscribe([topic])
        self.c, self.topic = consumer, topic

    def read(self, max_messages: int, block_ms: int) -> list[Message]:
        raw = self.c.consume(num_messages=max_messages, timeout=block_ms / 1000)
        out = []
        for m in raw:
            if m.error():
                raise HuaxiangError(f"kafka: {m.error()}")
            out.append(Message(f"{m.partition()}:{m.offset()}", m.value()))
        return out

    def ack(self, messages: list[Message]) -> None:
        if messages:
            self.c.commit(asynchronous=False)  # commits the offsets of everything consumed so far

    def rewind(self) -> None:
        for tp in self.c.committed(self.c.assignment()):  # back to the last committed offset of each partition
            if tp.offset >= 0:  # (none committed yet: the group's auto.offset.reset applies on the next read)
                self.c.seek(tp)

    def default_event_id(self, message: Message) -> str:
        return f"kafka:{self.topic}:{message.id}"


def _entry(entry_id, fields: dict | None) -> Message:
    fields = fields or {}  # (an entry trimmed from the stream while pending comes back without fields)
    if b"forget" in fields:
        return Message(_text(entry_id), fields[b"forget"], "forget")
    if b"exposures" in fields:
        return Message(_text(entry_id), fields[b"exposures"], "exposures")
    return Message(_text(entry_id), fields.get(b"event"))


def _text(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def decode(source: Source, messages: list[Message]) -> list:
    """Messages -> records for `ingest_records`; an unreadable message becomes a record that is quarantined
    (a string), not an exception: it is acknowledged with the rest, never redelivered forever."""
    records = []
    for m in messages:
        try:
            obj = json.loads(m.payload) if m.payload is not None else None
        except (ValueError, RecursionError, UnicodeDecodeError):
            obj = None
        if isinstance(obj, dict):
            obj.setdefault("event_id", source.default_event_id(m))
            records.append(obj)
        else:
            records.append(f"message {m.id}: not a JSON object: {_text(m.payload)[:200]}")
    return records


@dataclass
class ConsumeReport:
    messages: int = 0
    added: int = 0
    duplicates: int = 0
    quarantined: int = 0
    refreshed: int = 0
    batches: int = 0
    forgotten: int = 0  # deletions executed
    online: int = 0  # users written to the online store
    exposures: int = 0  # exposure rows stored (from online workers)


def crash_point(name: str) -> None:
    """Kills this process with SIGKILL when env HUAXIANG_CRASH_AT is `name`, once: the file named by env
    HUAXIANG_CRASH_MARKER is made when it fires, and its existence stops it firing again (for crash tests)."""
    if os.environ.get("HUAXIANG_CRASH_AT") != name:
        return
    marker = os.environ.get("HUAXIANG_CRASH_MARKER")
    if marker:
        if os.path.exists(marker):
            return
        with open(marker, "w") as f:
            f.write(name)
    os.kill(os.getpid(), signal.SIGKILL)


def forget_order(message: Message) -> tuple[str, bool] | None:
    """(user id, suppress) of a `forget` entry; None when it is unreadable."""
    try:
        obj = json.loads(message.payload) if message.payload is not None else None
    except (ValueError, RecursionError, UnicodeDecodeError):
        obj = None
    if not isinstance(obj, dict) or not isinstance(obj.get("user_id"), str) \
            or not isinstance(obj.get("suppress", True), bool):
        return None
    return obj["user_id"], obj.get("suppress", True)


def _runs(messages: list[Message]) -> list[list[Message]]:
    """The messages cut before and after each deletion or exposures entry: runs of events, and each of those alone,
    in order."""
    runs: list[list[Message]] = []
    for m in messages:
        if m.kind != "event" or not runs or runs[-1][0].kind != "event":
            runs.append([m])
        else:
            runs[-1].append(m)
    return runs


def store_path(con) -> str:
    """The file of the store behind a DuckDB connection."""
    return con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchone()[0]


def consume(con, cfg, source: Source, batch: int = 500, block_ms: int = 200, idle_exit_s: float | None = None,
            max_messages: int | None = None,
            on_batch: Callable[[ConsumeReport, list[Message]], None] | None = None,
            refresh: Callable[[list[str]], int] | None = None, lock=None, writer=None,
            forget: Callable[[str, bool], object] | None = None, live=None) -> ConsumeReport:
    """Read → store (one transaction) → refresh those users' profiles → write them online → acknowledge, until
    idle for `idle_exit_s` seconds or `max_messages` read. `refresh(user_ids)` updates profiles (default: a
    `ProfileRefresher`; the service passes its own, which also renews its profile documents) — also when the
    batch was all duplicates, as a batch redelivered after a crash between its commit and its refresh is.
    `writer`: an `online.writer.OnlineWriter` (None: no online store). A `forget` entry splits the batch and is
    executed in its place by `forget(user_id, suppress)` (default: `forget.forget_user` on this store), then
    removed online. `lock`: held around each batch's store, refresh and online write, and each deletion (the
    service's write lock). `on_batch(report, messages)` runs after each acknowledgement. `live`: an
    `online.live.LivePath` (with `writer`, and without `refresh` or `lock`): each batch is patched online right
    after its commit and acknowledged, and refreshed in the live path's rounds (all done before this returns)."""
    from .ingest import ingest_records
    from .profile.build import ProfileRefresher
    report, idle_since = ConsumeReport(), time.monotonic()
    if live is None:
        refresh = refresh or ProfileRefresher(con, cfg).refresh
    if writer is not None and writer.con is None:
        writer.con = con  # it renders what this consumer stored
    if forget is None:
        from .forget import forget_user
        db = store_path(con)

        def forget(user_id: str, suppress: bool):
            return forget_user(con, db, user_id, suppress=suppress)
    while max_messages is None or report.messages < max_messages:
        messages = source.read(batch, block_ms)
        if not messages:
            if writer is not None:
                with lock or nullcontext():
                    writer.idle()  # segment entries that came due
            if idle_exit_s is not None and time.monotonic() - idle_since >= idle_exit_s:
                break
            continue
        for run in _runs(messages):
            if run[0].kind == "forget":
                _forget(run[0], forget, writer, lock, report, live)
            elif run[0].kind == "exposures":
                report.exposures += _store_exposures(con, run[0])
            else:
                records = decode(source, run)

                def store(records=records, label=f"stream:{run[0].id}"):
                    return ingest_records(con, records, label, future_tolerance_s=cfg.future_tolerance_seconds)
                if live is not None:
                    r, patched = live.store(run[-1].id, store)
                    report.online += patched
                    report.refreshed = live.refreshed
                else:
                    with lock or nullcontext():
                        r = store()
                        crash_point("after_commit")
                        if r.users:
                            report.refreshed += refresh(r.users)
                        crash_point("after_refresh")
                        if writer is not None and r.users:
                            report.online += writer.write(r.users)
                report.added += r.added.get("events", 0)
                report.duplicates += r.duplicates.get("events", 0)
                report.quarantined += r.quarantined
            crash_point("after_online")
            source.ack(run)
            report.messages += len(run)
            report.batches += 1
            if on_batch:
                on_batch(report, run)
        idle_since = time.monotonic()
    if live is not None:
        live.close()
        report.online += live.written
        report.refreshed = live.refreshed
    return report


def _store_exposures(con, message: Message) -> int:
    """An online worker's batch of exposure records (`experiments.exposures.record`, a line each) into
    `exposures`; an unreadable entry is logged and skipped (what was shown is a measurement, not a person's data to
    keep)."""
    import duckdb

    from .experiments.exposures import store_lines
    try:
        return store_lines(con, _text(message.payload).split("\n"))
    except duckdb.Error as exc:
        log.warning("stream entry %s: unreadable exposures (%s): %s", message.id, str(exc).splitlines()[0],
                    _text(message.payload)[:200])
        return 0


def _forget(message: Message, forget, writer, lock, report: ConsumeReport, live=None) -> None:
    """One deletion: the store's (an unknown user — e.g. the entry redelivered after it ran — is only logged),
    then the online store's."""
    order = forget_order(message)
    if order is None:
        log.warning("stream entry %s: not a deletion order (expected {\"user_id\": …, \"suppress\": …}): %s",
                    message.id, _text(message.payload)[:200])
        return
    user_id, suppress = order
    with live.exclusive(user_id) if live is not None else lock or nullcontext():
        try:
            forget(user_id, suppress)
            report.forgotten += 1
        except HuaxiangError as exc:
            log.warning("stream entry %s: %s", message.id, exc)
        crash_point("after_commit")
        if writer is not None:
            writer.forgotten([user_id])


@contextmanager
def local_redis(directory: str) -> Iterator[str]:
    """A throwaway Debian `redis-server` on a free loopback port, without persistence, for tests, benchmarks and
    trying `huaxiang consume` out; yields its URL and stops it on exit."""
    import redis
    server = shutil.which("redis-server")
    if server is None:
        raise HuaxiangError("redis-server is not installed (Debian package redis-server; .ci/run installs it)")
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(directory)], stdout=subprocess.DEVNULL)
    try:
        r = redis.Redis(port=port)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
