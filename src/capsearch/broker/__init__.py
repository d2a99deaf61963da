"""Distributed mode over Redis: web replicas send model work to model workers.

Set `CAPSEARCH_BROKER__URL` and run `capsearch worker` processes beside `capsearch serve`:

* caption jobs are durable stream entries (two priorities) read by workers in a consumer group; the
  worker writes the caption itself, idempotently, and acknowledges only after the commit
  (capsearch.broker.captions, capsearch.broker.worker);
* voice passes and query embeddings go request/reply with a deadline (capsearch.broker.rpc);
* events travel over pub/sub, and each replica's search index follows an ordered change feed in the
  database (capsearch.broker.feed);
* workers heartbeat; a model with no live worker answers `no_workers` at once (capsearch.broker.health).

Without the setting none of this is imported and the app runs in one process as before.
"""
