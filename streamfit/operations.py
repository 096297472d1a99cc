"""``streamfit status`` and ``streamfit rollback``: where the loop stands, and undoing a promotion.

The ``models`` topic is the history of champions (one message per promotion or rollback), so the
previous champion is the one before the current on that topic, whatever the registry holds.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition
from rich.console import Console
from rich.table import Table

from common.errors import ConfigError, StreamfitError
from common.kafka import make_admin, make_consumer, make_producer, send_and_wait
from common.messages import ModelReload, decode
from common.model_store import ModelStore
from common.settings import Group, Settings

GROUPS: tuple[Group, ...] = ("kafka", "model", "general")
SERVICES = ("predictor", "trainer")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "rollback":
        parser.add_argument("--to", metavar="VERSION", help="version to make the champion (default: the previous one)")
    else:
        parser.add_argument("--versions", type=int, default=5, help="how many recent versions to list")
        parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")


def champion_history(settings: Settings, timeout: float = 10.0) -> list[ModelReload]:
    """Every reload message on the models topic, oldest first."""
    consumer = make_consumer(settings, group_id=None, client_id="streamfit-status")
    tp = TopicPartition(settings.topic("models"), 0)
    history: list[ModelReload] = []
    try:
        if not consumer.partitions_for_topic(tp.topic):
            return history
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = consumer.end_offsets([tp])[tp]
        deadline = time.monotonic() + timeout
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    message = decode(ModelReload, record.value)
                    if isinstance(message, ModelReload):
                        history.append(message)
    finally:
        consumer.close()
    return history


def consumer_lag(settings: Settings) -> dict[str, dict[str, int]]:
    """Per service group: committed offsets behind the end of each topic it reads."""
    admin = make_admin(settings)
    consumer = make_consumer(settings, group_id=None, client_id="streamfit-status")
    lag: dict[str, dict[str, int]] = {}
    try:
        groups = {settings.group_id(service): service for service in SERVICES}
        answers = admin.list_group_offsets(list(groups))
        for group, committed in answers.items():
            service = groups[group]
            committed = {tp: meta for tp, meta in committed.items() if meta.offset >= 0}
            if not committed:
                continue
            ends = consumer.end_offsets(list(committed))
            per_topic: dict[str, int] = {}
            for tp, meta in committed.items():
                name = tp.topic.removeprefix(settings.topic_prefix)
                per_topic[name] = per_topic.get(name, 0) + max(0, ends.get(tp, 0) - max(meta.offset, 0))
            lag[service] = per_topic
    finally:
        admin.close()
        consumer.close()
    return lag


@dataclass(frozen=True)
class Status:
    champion: ModelReload | None
    versions: list[dict[str, Any]]
    lag: dict[str, dict[str, int]]
    champions_published: int


def read_status(settings: Settings, recent: int = 5) -> Status:
    store = ModelStore(settings)
    history = champion_history(settings)
    champion_version = store.champion_version()
    champion = store.reload_message(champion_version) if champion_version else None
    versions = []
    for mv in store.versions()[-recent:]:
        tags = dict(mv.tags)
        versions.append(
            {
                "version": str(mv.version),
                "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mv.creation_timestamp / 1000)),
                "loss": tags.get("metric.loss"),
                "accuracy": tags.get("metric.accuracy"),
                "decision": tags.get("streamfit.decision", "promoted" if str(mv.version) == champion_version else ""),
                "champion": str(mv.version) == champion_version,
            }
        )
    return Status(champion, versions, consumer_lag(settings), len(history))


def print_status(status: Status, settings: Settings, console: Console) -> None:
    if status.champion is None:
        console.print(f"[yellow]no champion yet for model {settings.model_name}[/]: run `streamfit bootstrap`")
    else:
        c = status.champion
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in c.metrics.items() if k != "rows")
        console.print(f"champion of [bold]{c.model_name}[/]: version [bold]{c.version}[/] ({metrics})")
        console.print(f"  bundle {c.uri}  sha256 {c.sha256[:16]}…")
    table = Table(title="recent versions")
    for column in ("version", "created", "holdout loss", "accuracy", "decision"):
        table.add_column(column)
    for v in status.versions:
        mark = " ★" if v["champion"] else ""
        table.add_row(v["version"] + mark, v["created"], _num(v["loss"]), _num(v["accuracy"]), v["decision"])
    console.print(table)
    lag = Table(title="consumer lag (messages not yet committed)")
    lag.add_column("service")
    lag.add_column("topic")
    lag.add_column("lag", justify="right")
    for service, topics in status.lag.items():
        for topic, behind in sorted(topics.items()):
            lag.add_row(service, topic, str(behind))
    if not status.lag:
        lag.add_row("-", "no committed offsets yet", "-")
    console.print(lag)
    console.print(f"{status.champions_published} reload message(s) on {settings.topic('models')}")


def _num(value: str | None) -> str:
    return "-" if value in (None, "") else f"{float(value):.4f}"


def rollback(settings: Settings, to: str | None = None) -> ModelReload:
    """Make ``to`` (default: the champion before the current one) the champion and publish it."""
    store = ModelStore(settings)
    current = store.champion_version()
    if to is None:
        distinct: list[str] = []
        for message in champion_history(settings):
            if not distinct or distinct[-1] != message.version:
                distinct.append(message.version)
        earlier = [v for v in distinct if v != current]
        if not earlier:
            raise ConfigError(f"model {settings.model_name} has no earlier champion to roll back to; pass --to VERSION")
        to = earlier[-1]
    known = {str(mv.version) for mv in store.versions()}
    if to not in known:
        raise ConfigError(
            f"model {settings.model_name} has no version {to!r} (known: {', '.join(sorted(known, key=int))})"
        )
    message = store.reload_message(to)
    store.set_champion(to)
    producer = make_producer(settings, client_id="streamfit-rollback")
    try:
        send_and_wait(producer, settings.topic("models"), settings.model_name, message)
    finally:
        producer.close()
    return message


def run(settings: Settings, args: argparse.Namespace) -> int:
    console = Console()
    if args.command == "rollback":
        before = ModelStore(settings).champion_version()
        message = rollback(settings, args.to)
        console.print(f"champion of {settings.model_name}: version {before} → {message.version}; reload published")
        return 0
    status = read_status(settings, args.versions)
    if args.json:
        import orjson

        payload = {
            "model_name": settings.model_name,
            "champion": status.champion.model_dump() if status.champion else None,
            "versions": status.versions,
            "lag": status.lag,
            "champions_published": status.champions_published,
        }
        print(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
        return 0
    print_status(status, settings, console)
    return 0


__all__ = ["Status", "StreamfitError", "champion_history", "consumer_lag", "read_status", "rollback"]
