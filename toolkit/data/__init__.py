"""Data plumbing shared by dataset plugins: the batch-source contract and rank/worker sharding info.

The submodules hold the rest: `cache` (cache root, content hashes, build-once under a lock),
`shards` (webdataset shard patterns and reading), `order` (resumable training orders, validation
passes and the sources built on them).
"""

from toolkit.data.source import BatchSource, ShardInfo

__all__ = ["BatchSource", "ShardInfo"]
