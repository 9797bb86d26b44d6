"""Prometheus metrics of one server, in a registry of its own (two apps in one process do not collide)."""

from __future__ import annotations

from typing import Any

from ..optional import require

__all__ = ["Metrics"]

# Pairs (or tokens) per model call: powers of two up to far past any budget.
_SIZE_BUCKETS = tuple(float(2**power) for power in range(17))
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The series ``GET /metrics`` shows, all prefixed ``autorerank_``."""

    def __init__(self) -> None:
        prometheus = require("prometheus_client", "server", "autorerank serve")
        self._prometheus = prometheus
        self.registry = prometheus.CollectorRegistry()
        counter, gauge, histogram = prometheus.Counter, prometheus.Gauge, prometheus.Histogram
        registry: Any = self.registry
        self.requests = counter(
            "autorerank_requests", "HTTP requests by route and status", ["route", "status"], registry=registry
        )
        self.latency = histogram(
            "autorerank_request_seconds",
            "time from request to response, by route",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = gauge(
            "autorerank_requests_in_flight", "scoring requests being served", registry=registry
        )
        self.pairs = counter("autorerank_pairs", "pairs scored by the model", registry=registry)
        self.tokens = counter("autorerank_tokens", "tokens of the pairs scored", registry=registry)
        self.queue_pairs = gauge("autorerank_queue_pairs", "pairs waiting for the model", registry=registry)
        self.queue_requests = gauge(
            "autorerank_queue_requests", "requests waiting for the model", registry=registry
        )
        self.batch_pairs = histogram(
            "autorerank_batch_pairs",
            "pairs per model call (requests drained from the queue together)",
            buckets=_SIZE_BUCKETS,
            registry=registry,
        )
        self.batch_requests = histogram(
            "autorerank_batch_requests", "requests per model call", buckets=_SIZE_BUCKETS, registry=registry
        )
        self.dropped = counter(
            "autorerank_requests_dropped",
            "requests dropped before scoring because their client had gone",
            registry=registry,
        )
        self.model_errors = counter(
            "autorerank_model_errors", "model calls that raised (their requests got 500)", registry=registry
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return self._prometheus.generate_latest(self.registry), self._prometheus.CONTENT_TYPE_LATEST
