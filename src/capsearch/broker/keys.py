"""Every Redis key distributed mode uses, under one prefix (several deployments share one Redis)."""

from __future__ import annotations

from dataclasses import dataclass

from capsearch.batching import Priority

# The consumer group every worker of a model joins: each entry goes to exactly one of them.
GROUP = "workers"
MODELS = ("captioner", "transcriber", "embedder")


@dataclass(frozen=True)
class Keys:
    prefix: str

    def captions(self, priority: Priority) -> str:
        """The durable caption jobs of one priority."""
        return f"{self.prefix}:captions:{priority.name.lower()}"

    def caption_attempts(self) -> str:
        """Hash: caption job entry id → how many times a worker took it."""
        return f"{self.prefix}:captions:attempts"

    def caption_jobs(self) -> str:
        """Hash: job token → image id, for every caption job queued and not yet acknowledged."""
        return f"{self.prefix}:captions:jobs"

    def requests(self, model: str, priority: Priority) -> str:
        """Interactive request/reply work for one model (voice passes, embeddings)."""
        return f"{self.prefix}:requests:{model}:{priority.name.lower()}"

    def replies(self, replica: str) -> str:
        """Pub/sub channel on which one web replica (or worker) receives its answers."""
        return f"{self.prefix}:replies:{replica}"

    def workers(self, model: str) -> str:
        """Sorted set: worker id → when its last heartbeat expires (ms since the epoch)."""
        return f"{self.prefix}:workers:{model}"

    def events(self) -> str:
        """Pub/sub channel of the typed app events (capsearch.events), with their origin."""
        return f"{self.prefix}:events"

    def embedder_info(self) -> str:
        """Hash {label, dim} of the embedding model the workers run: web replicas index its vectors."""
        return f"{self.prefix}:models:embedder"

    def index_doorbell(self) -> str:
        """Pub/sub channel rung after each index change commits: replicas read the feed at once."""
        return f"{self.prefix}:index"
