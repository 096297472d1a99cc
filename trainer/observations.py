"""The observations topic, read up to a watermark and kept in a local Parquet cache.

A cycle trains on every observation up to the end offsets it reads when it starts (the
watermarks, logged with its MLflow run). Re-reading the whole topic every cycle would grow without
bound, so what has been read is kept under ``STREAMFIT_HOME``: one Parquet file per refresh plus a
small ``state.json`` naming the files and the next offset of every partition. The Parquet file is
written before the state that names it (both by rename), so a crash leaves either the old state
or the new one, never a state pointing at half a file; records read but not yet in the state are
simply read again.

Records that cannot be trained on (undecodable, features that do not fit the schema, a label that
is not a valid class or number) are dead-lettered once, when they are first read, and not cached.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from streamfit.common.errors import BrokerUnavailable
from streamfit.common.kafka import make_consumer
from streamfit.common.messages import DeadLetter, Decoder, Observation, Rejected, dead_letter
from streamfit.common.pipeline import FeaturePipeline
from streamfit.common.settings import Settings
from streamfit.trainer.data import invalid_observation
from streamfit.trainer.drift import skew

log = logging.getLogger(__name__)

STATE_FORMAT = 2  # 2: the served error of each observation (an older cache is re-read from the topic)
MAX_PARTS = 64  # beyond this many files the cache is rewritten as one
SCHEMA = pa.schema([
    ("partition", pa.int32()), ("offset", pa.int64()), ("request_id", pa.string()),
    ("observed_at", pa.float64()), ("features", pa.string()), ("label", pa.string()),
    ("served_error", pa.float64()),
])  # fmt: skip

DeadLetterSink = Callable[[bytes | None, DeadLetter], None]  # (original key, dead letter)


@dataclass(frozen=True)
class Refresh:
    watermarks: dict[int, int]  # partition -> end offset read at the start of the cycle
    read: int  # records read from the topic this time
    cached: int  # valid observations in the cache after this refresh
    dead_lettered: int
    skew_checked: int = 0  # observations read that carried the vector they were served
    skew: tuple[str, ...] = ()  # why each one whose vector differs from the trainer's (dead-lettered)

    def then(self, later: Refresh) -> Refresh:
        """This refresh followed by ``later``: its watermarks and cache, the counts of both."""
        return Refresh(
            later.watermarks, self.read + later.read, later.cached, self.dead_lettered + later.dead_lettered,
            self.skew_checked + later.skew_checked, self.skew + later.skew,
        )  # fmt: skip


def served_error(pipeline: FeaturePipeline, prediction: Any, label: Any) -> float:
    """How wrong the served answer was: 0 or 1 for a class, the absolute error for a number; NaN
    when the prediction cannot be read with this pipeline. The trainer finds concept changes in it."""
    truth, served = pipeline.encode_label(label), pipeline.encode_label(prediction)
    if truth is None or served is None:
        return math.nan
    if pipeline.task == "regression":
        return abs(served - truth)
    return 0.0 if served == truth else 1.0


class ObservationLog:
    """All valid observations read so far, in read order (partition, offset), in memory and on disk."""

    def __init__(self, settings: Settings, directory: Path | None = None) -> None:
        self.settings = settings
        self.topic = settings.topic("observations")
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", self.topic)
        self.directory = directory or settings.home / "trainer" / "observations" / safe
        self.request_ids: list[str] = []
        self.features: list[dict[str, Any]] = []
        self.labels: list[Any] = []
        self.observed_at: list[float] = []
        self.served_error: list[float] = []  # 0/1 (classes) or |error| (regression) of what was served; NaN: unknown
        self.offsets: dict[int, int] = {}
        self.parts: list[str] = []
        self._loaded = False

    # --- the cache --------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.directory / "state.json"

    def load(self) -> None:
        """Read the cache from disk once per process."""
        if self._loaded:
            return
        self._loaded = True
        if not self.state_path.exists():
            return
        try:
            state = orjson.loads(self.state_path.read_bytes())
            if state.get("format") != STATE_FORMAT or state.get("topic") != self.topic:
                raise ValueError(f"cache is for {state.get('topic')!r}, format {state.get('format')!r}")
            for name in state["parts"]:
                self._append_table(pq.read_table(self.directory / name, schema=SCHEMA))
            self.offsets = {int(p): int(o) for p, o in state["offsets"].items()}
            self.parts = list(state["parts"])
        except Exception as exc:  # noqa: BLE001 - a broken cache is rebuilt from the topic
            log.warning(
                "observation cache %s is unreadable (%s); reading the topic from the start", self.directory, exc
            )
            self._reset()
        else:
            log.info(
                "observation cache %s: %d observations, offsets %s", self.directory, len(self.labels), self.offsets
            )

    def _reset(self) -> None:
        self.request_ids, self.features, self.labels, self.observed_at, self.served_error = [], [], [], [], []
        self.offsets, self.parts = {}, []

    def _append_table(self, table: pa.Table) -> None:
        columns = table.to_pydict()
        self.request_ids.extend(columns["request_id"])
        self.features.extend(orjson.loads(f) for f in columns["features"])
        self.labels.extend(orjson.loads(v) for v in columns["label"])
        self.observed_at.extend(columns["observed_at"])
        self.served_error.extend(math.nan if e is None else e for e in columns["served_error"])

    def _write(self, rows: dict[str, list[Any]], offsets: dict[int, int]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        parts = list(self.parts)
        if rows["offset"]:
            table = pa.Table.from_pydict(rows, schema=SCHEMA)
            if len(parts) >= MAX_PARTS:  # compact: every part so far plus the new rows, in one file
                table = pa.concat_tables([*(pq.read_table(self.directory / p, schema=SCHEMA) for p in parts), table])
                parts = []
            name = f"part-{self._sequence():06d}.parquet"
            tmp = self.directory / f".{name}.tmp"
            pq.write_table(table, tmp)
            os.replace(tmp, self.directory / name)
            parts.append(name)
        state = {"format": STATE_FORMAT, "topic": self.topic, "offsets": {str(p): o for p, o in offsets.items()},
                 "parts": parts}  # fmt: skip
        tmp_state = self.directory / ".state.json.tmp"
        tmp_state.write_bytes(orjson.dumps(state))
        os.replace(tmp_state, self.state_path)
        for stale in set(self.parts) - set(parts):  # compacted away; only after the state moved on
            (self.directory / stale).unlink(missing_ok=True)
        self.parts = parts

    def _sequence(self) -> int:
        """A file number no part named by the state uses (a crash may leave an unnamed one behind)."""
        numbers = [int(m.group(1)) for p in self.parts if (m := re.match(r"part-(\d+)\.parquet$", p))]
        return max(numbers, default=-1) + 1

    # --- reading the topic --------------------------------------------------------------------
    def refresh(self, pipeline: FeaturePipeline, sink: DeadLetterSink, flush: Callable[[], None]) -> Refresh:
        """Read the topic up to its current end offsets; those offsets are the watermarks."""
        from kafka import TopicPartition

        self.load()
        settings = self.settings
        reject_missing = settings.missing_features == "reject"
        decoder = Decoder(Observation, settings.max_message_bytes)
        consumer = make_consumer(settings, None, client_id="streamfit-trainer-observations", max_poll_records=5000)
        try:
            partitions = self._partitions(consumer)
            tps = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(tps)
            ends = {tp.partition: int(o) for tp, o in consumer.end_offsets(tps).items()}
            begins = {tp.partition: int(o) for tp, o in consumer.beginning_offsets(tps).items()}
            if any(self.offsets.get(p, 0) > ends[p] for p in partitions):
                log.warning("topic %s is behind the cache (recreated?): re-reading it", self.topic)
                self._reset()
                self._write({name: [] for name in SCHEMA.names}, {})
            starts = {p: max(self.offsets.get(p, 0), begins[p]) for p in partitions}
            for tp in tps:
                consumer.seek(tp, starts[tp.partition])
            rows: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
            read = dead = 0
            checked: list[str] = []
            skewed: list[str] = []
            pending = {p for p in partitions if starts[p] < ends[p]}
            last_progress = time.monotonic()
            while pending:
                batches = consumer.poll(timeout_ms=500)
                if not batches and time.monotonic() - last_progress > settings.broker_timeout:
                    raise BrokerUnavailable(
                        f"reading {self.topic} stalled for {settings.broker_timeout:.0f}s before the watermarks {ends}"
                    )
                for tp, records in batches.items():
                    for record in records:
                        if record.offset >= ends[tp.partition]:
                            break
                        read += 1
                        last_progress = time.monotonic()
                        reason = self._accept(record, decoder, pipeline, reject_missing, rows, checked, skewed)
                        if reason is not None:
                            dead += 1
                            sink(
                                record.key,
                                dead_letter(record.topic, record.partition, record.offset, reason, record.value),
                            )
                for p in list(pending):
                    if consumer.position(TopicPartition(self.topic, p)) >= ends[p]:
                        pending.discard(p)
        finally:
            consumer.close()
        if dead:
            flush()  # dead letters are on the broker before the cache says these records were read
        self._write(rows, {**self.offsets, **ends})
        self._append_table(pa.Table.from_pydict(rows, schema=SCHEMA))
        self.offsets = {**self.offsets, **ends}
        if read:
            log.info("read %d observations from %s (%d dead-lettered); watermarks %s", read, self.topic, dead,
                     dict(sorted(ends.items())))  # fmt: skip
        return Refresh(ends, read, len(self.labels), dead, len(checked), tuple(skewed))

    def _partitions(self, consumer: Any) -> list[int]:
        deadline = time.monotonic() + self.settings.broker_timeout
        while True:
            found = consumer.partitions_for_topic(self.topic)
            if found:
                return sorted(found)
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"topic {self.topic} has no metadata after {self.settings.broker_timeout:.0f}s")
            time.sleep(0.2)

    @staticmethod
    def _accept(
        record: Any,
        decoder: Decoder[Observation],
        pipeline: FeaturePipeline,
        reject_missing: bool,
        rows: dict[str, list[Any]],
        checked: list[str],
        skewed: list[str],
    ) -> str | None:
        decoded = decoder(record.value)
        if isinstance(decoded, Rejected):
            return decoded.reason
        reason = invalid_observation(pipeline, decoded.features, decoded.label, reject_missing)
        if reason is not None:
            return reason
        if decoded.served is not None:
            checked.append(decoded.request_id)
            found = skew(pipeline, decoded.features, decoded.served)
            if found is not None:
                why = f"{found.describe()} (request {decoded.request_id}, model version {decoded.model_version})"
                skewed.append(why)
                return why
        rows["partition"].append(record.partition)
        rows["offset"].append(record.offset)
        rows["request_id"].append(decoded.request_id)
        rows["observed_at"].append(decoded.observed_at)
        rows["features"].append(orjson.dumps(decoded.features).decode())
        rows["label"].append(orjson.dumps(decoded.label).decode())
        rows["served_error"].append(served_error(pipeline, decoded.prediction, decoded.label))
        return None
