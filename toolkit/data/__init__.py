"""Data plumbing shared by dataset plugins: rank/worker sharding info and the batch-source contract."""

from toolkit.data.source import BatchSource, ShardInfo

__all__ = ["BatchSource", "ShardInfo"]
