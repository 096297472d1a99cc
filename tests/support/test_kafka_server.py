"""The test broker itself: a cluster id is random, and one in 64 starts with '-'."""

from __future__ import annotations

import pytest
from kafka import KafkaAdminClient

from streamfit.kafka_server import KafkaServer

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_a_cluster_id_that_starts_with_a_dash_formats_and_serves() -> None:
    server = KafkaServer(cluster_id="-06NJACgTUOAlFYxl3zkuQ")  # the id of a CI run the format refused
    try:
        server.start()
        admin = KafkaAdminClient(bootstrap_servers=server.bootstrap, request_timeout_ms=10_000)
        try:
            assert admin.describe_cluster()["cluster_id"] == "-06NJACgTUOAlFYxl3zkuQ"
        finally:
            admin.close()
    finally:
        server.cleanup()
