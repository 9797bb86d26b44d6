"""The server's own settings (the model's are the library options): limits, address and key, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PASSES_PER_CALL", "ServerSettings"]

# Forward passes' worth of tokens the model worker takes off the queue per chunk unless batch_tokens says.
PASSES_PER_CALL = 8


@dataclass(frozen=True)
class ServerSettings:
    """How the server listens and what it accepts.

    The limits keep one client from taking the server down: ``max_documents`` and ``max_body_bytes`` bound one
    request (413 past them), ``max_queued_pairs`` bounds the pairs waiting for the model (429 with ``Retry-After``
    past it, instead of a queue that grows until memory runs out). ``batch_tokens`` is how many tokens the model
    worker takes off the queue for one chunk, which the library splits into forward passes under the model's own
    ``max_batch_tokens``; None: :data:`PASSES_PER_CALL` such passes (131072 tokens on a GPU), so that 32 clients'
    requests share a chunk, length-sorted, instead of queueing behind each other in small ones.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = field(default=None, repr=False)  # never in a repr, so never in a log line
    model_name: str = "autorerank"
    max_documents: int = 1000
    max_body_bytes: int = 2_000_000
    max_queued_pairs: int = 16384
    batch_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_documents", "max_body_bytes", "max_queued_pairs", "batch_tokens"):
            value = getattr(self, name)
            if value is None and name == "batch_tokens":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServerSettings.{name} must be a positive int, got {value!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"ServerSettings.port must be 0-65535, got {self.port!r}")
