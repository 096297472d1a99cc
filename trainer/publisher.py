"""What the trainer writes to Kafka: reload messages (waiting for the broker's ack) and dead
letters. One idempotent producer, created on first use."""

from __future__ import annotations

import logging
from typing import Any

from streamfit.common.kafka import make_producer, send_and_wait
from streamfit.common.messages import DeadLetter, ModelReload
from streamfit.common.settings import Settings
from streamfit.trainer.metrics import DEAD_LETTERS

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: Any = None
        self._closed = False

    @property
    def producer(self) -> Any:
        if self._closed:
            raise RuntimeError("the trainer's publisher is closed")
        if self._producer is None:
            self._producer = make_producer(self.settings, client_id="streamfit-trainer")
        return self._producer

    def publish_reload(self, message: ModelReload) -> Any:
        """Send the reload message and wait for the broker's acknowledgement (raises if none)."""
        topic = self.settings.topic("models")
        metadata = send_and_wait(self.producer, topic, self.settings.model_name, message,
                                 timeout=self.settings.broker_timeout)  # fmt: skip
        log.info("published version %s on %s (offset %s)", message.version, topic, getattr(metadata, "offset", "?"))
        return metadata

    def dead_letter(self, key: bytes | None, letter: DeadLetter) -> None:
        self.producer.send(self.settings.topic("dead-letters"), key=key, value=letter.encode())
        DEAD_LETTERS.labels(letter.source_topic).inc()
        log.warning("dead-lettered %s[%d]@%d: %s", letter.source_topic, letter.partition, letter.offset, letter.error)

    def flush(self) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=self.settings.broker_timeout)

    def close(self) -> None:
        if self._producer is not None and not self._closed:
            try:
                self._producer.close(timeout=self.settings.broker_timeout)
            except Exception as exc:  # noqa: BLE001 - closing must not mask the real error
                log.debug("closing the producer: %s", exc)
        self._closed = True
        self._producer = None
