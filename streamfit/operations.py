"""``streamfit status`` and ``streamfit rollback``: where the loop stands, and undoing a promotion.

The ``models`` topic is the history of champions (one message per promotion or rollback), so the
previous champion is the one before the current on that topic, whatever the registry holds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import TopicPartition
from rich.console import Console
from rich.table import Table

from streamfit.common import tags as tag
from streamfit.common.errors import ConfigError, StreamfitError
from streamfit.common.kafka import make_admin, make_consumer, make_producer, send_and_wait
from streamfit.common.messages import ModelReload, Retrain, decode
from streamfit.common.model_store import ModelStore
from streamfit.common.settings import Group, Settings
from streamfit.trainer.crown import crown

GROUPS: tuple[Group, ...] = ("kafka", "model", "general")
SERVICES = ("predictor", "trainer")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "rollback":
        parser.add_argument("--to", metavar="VERSION", help="version to make the champion (default: the previous one)")
    else:
        parser.add_argument("--versions", type=int, default=5, help="how many recent versions to list")
        parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
        parser.add_argument(
            "--predictor-metrics", action="append", default=[], metavar="URL",
            help="a predictor's metrics URL (http://host:port/metrics) to show its live drift; repeatable",
        )  # fmt: skip


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


def drift_requests(settings: Settings, timeout: float = 10.0) -> list[Retrain]:
    """Every retrain request with reason ``drift`` on the retrain topic, oldest first."""
    consumer = make_consumer(settings, group_id=None, client_id="streamfit-status")
    topic = settings.topic("retrain")
    found: list[Retrain] = []
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return found
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    message = decode(Retrain, record.value)
                    if isinstance(message, Retrain) and message.reason == "drift":
                        found.append(message)
    finally:
        consumer.close()
    return sorted(found, key=lambda m: m.requested_at)


def last_cycle_drift(store: ModelStore) -> dict[str, Any] | None:
    """The drift report of the newest cycle that measured one (adversarial validation)."""
    runs = store.client.search_runs(
        [store.experiment_id()], "tags.`streamfit.kind` = 'cycle'", order_by=["attributes.start_time DESC"],
        max_results=20,
    )  # fmt: skip
    for run in runs:
        if "drift_score" in run.data.metrics:
            tags = run.data.tags
            return {
                "run_id": run.info.run_id, "reason": tags.get(tag.REASON),
                "drift_score": run.data.metrics["drift_score"],
                "adversarial_auc": run.data.metrics.get("adversarial_auc"),
                "top_psi": orjson.loads(tags.get(tag.DRIFT_TOP, "{}")),
            }  # fmt: skip
    return None


def live_drift(url: str) -> dict[str, Any]:
    """A predictor's live drift, read from its /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except Exception as exc:  # noqa: BLE001 - one unreachable predictor is a line in the report
        return {"url": url, "error": f"{type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {"url": url, "psi": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, value = sample.name, sample.value
            if name == "streamfit_predictor_drift_psi":
                out["psi"][sample.labels["feature"]] = value
            elif name == "streamfit_predictor_drift_psi_overall":
                out["psi_overall"] = value
            elif name in ("streamfit_predictor_live_metric", "streamfit_predictor_holdout_metric"):
                out["metric"] = sample.labels.get("metric")
                out["live" if "live" in name else "holdout"] = value
            elif name == "streamfit_predictor_drift_signals_total":
                out["drift_signals"] = out.get("drift_signals", 0.0) + value
    out["psi"] = dict(sorted(out["psi"].items(), key=lambda kv: -kv[1])[:5])
    return out


@dataclass(frozen=True)
class Status:
    champion: ModelReload | None
    versions: list[dict[str, Any]]
    lag: dict[str, dict[str, int]]
    champions_published: int
    drift_requests: list[dict[str, Any]] = field(default_factory=list)  # the newest few
    drift_requests_total: int = 0
    cycle_drift: dict[str, Any] | None = None
    live: list[dict[str, Any]] = field(default_factory=list)


def read_status(settings: Settings, recent: int = 5, predictor_metrics: Sequence[str] = ()) -> Status:
    store = ModelStore(settings)
    history = champion_history(settings)
    champion_version = store.champion_version()
    champion = store.reload_message(champion_version) if champion_version else None
    versions = []
    for record in store.records()[-recent:]:
        versions.append(
            {
                "version": record.version,
                "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created)),
                "loss": record.metrics.get("loss"),
                "accuracy": record.metrics.get("accuracy"),
                "decision": record.decision or ("promoted" if record.version == champion_version else ""),
                "reason": record.reason,
                "candidate": record.candidate,  # fast refit or search (trainer versions)
                "holdout": record.holdout,  # which rows decided the promotion
                "champion": record.version == champion_version,
            }
        )
    drifts = drift_requests(settings)
    shown = [
        {"requested_at": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m.requested_at)),
         "top_features": {f.feature: f.psi for f in m.top_features or []}, **(m.details or {})}
        for m in drifts[-3:]
    ]  # fmt: skip
    return Status(
        champion, versions, consumer_lag(settings), len(history), shown, len(drifts), last_cycle_drift(store),
        [live_drift(url) for url in predictor_metrics],
    )  # fmt: skip


def print_status(status: Status, settings: Settings, console: Console) -> None:
    if status.champion is None:
        console.print(f"[yellow]no champion yet for model {settings.model_name}[/]: run `streamfit bootstrap`")
    else:
        c = status.champion
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in c.metrics.items() if k != "rows")
        console.print(f"champion of [bold]{c.model_name}[/]: version [bold]{c.version}[/] ({metrics})")
        console.print(f"  bundle {c.uri}  sha256 {c.sha256[:16]}…")
    table = Table(title="recent versions")
    for column in ("version", "created", "made for", "by", "holdout loss", "accuracy", "decided on", "decision"):
        table.add_column(column)
    for v in status.versions:
        mark = " ★" if v["champion"] else ""
        table.add_row(v["version"] + mark, v["created"], v.get("reason") or "-", v.get("candidate") or "-",
                      _num(v["loss"]), _num(v["accuracy"]), v.get("holdout") or "-", v["decision"])  # fmt: skip
    console.print(table)
    print_drift(status, console)
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


def print_drift(status: Status, console: Console) -> None:
    drift = Table(title=f"drift retrain requests ({status.drift_requests_total} in all; the newest)")
    for column in ("requested", "served by", "cause", "top features (PSI)", "live vs holdout"):
        drift.add_column(column)
    for d in status.drift_requests:
        top = ", ".join(f"{name} {psi:.2f}" for name, psi in d["top_features"].items()) or "-"
        live = f"{d['metric']} {d['live']:.3f} vs {d['holdout']:.3f}" if "live" in d else "-"
        drift.add_row(d["requested_at"], f"v{d.get('model_version', '?')}", ",".join(d.get("causes", [])), top, live)
    if not status.drift_requests:
        drift.add_row("-", "-", "no drift retrain requested", "-", "-")
    console.print(drift)
    if status.cycle_drift is not None:
        c = status.cycle_drift
        top = ", ".join(f"{name} {psi:.2f}" for name, psi in c["top_psi"].items())
        console.print(f"last cycle's drift score {c['drift_score']:.3f} (adversarial AUC {c['adversarial_auc']:.3f}; "
                      f"newest observations vs base data; top PSI {top})")  # fmt: skip
    for scraped in status.live:
        if "error" in scraped:
            console.print(f"[yellow]{scraped['url']}[/]: {scraped['error']}")
            continue
        nan = float("nan")
        metric = (
            f"live {scraped.get('metric')} {scraped.get('live', nan):.4f} vs holdout {scraped.get('holdout', nan):.4f}"
        )
        psi = ", ".join(f"{name} {value:.3f}" for name, value in scraped["psi"].items()) or "window not full yet"
        console.print(f"{scraped['url']}: {metric}; PSI overall {scraped.get('psi_overall', nan):.3f} ({psi}); "
                      f"{scraped.get('drift_signals', 0):.0f} drift signal(s)")  # fmt: skip


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
    producer = make_producer(settings, client_id="streamfit-rollback")
    try:
        return crown(store, to, lambda message: send_and_wait(producer, settings.topic("models"),
                                                              settings.model_name, message))  # fmt: skip
    finally:
        producer.close()


def run(settings: Settings, args: argparse.Namespace) -> int:
    console = Console()
    if args.command == "rollback":
        before = ModelStore(settings).champion_version()
        message = rollback(settings, args.to)
        console.print(f"champion of {settings.model_name}: version {before} → {message.version}; reload published")
        return 0
    status = read_status(settings, args.versions, args.predictor_metrics)
    if args.json:
        payload = {
            "model_name": settings.model_name,
            "champion": status.champion.model_dump() if status.champion else None,
            "versions": status.versions,
            "lag": status.lag,
            "champions_published": status.champions_published,
            "drift_requests": status.drift_requests,
            "drift_requests_total": status.drift_requests_total,
            "cycle_drift": status.cycle_drift,
            "live": status.live,
        }
        print(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
        return 0
    print_status(status, settings, console)
    return 0


__all__ = ["Status", "StreamfitError", "champion_history", "consumer_lag", "drift_requests", "read_status", "rollback"]
