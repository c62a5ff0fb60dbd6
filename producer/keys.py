"""The Redis key names of the queue protocol, sharded so that the layout is Cluster-ready.

A flow belongs to shard ``crc32(flow id) mod shards``. Every key of a shard, its indexes and
its flows' queues alike, carries the hash tag ``{s}``: one script only ever touches one slot.
With one shard (the default) everything sits in ``{0}``; going to more shards needs a drained
queue, not a data migration of PostgreSQL. The per-flow key names are also built inside the
Lua scripts (producer/lua/lib.lua lists them); the two must agree.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class ShardKeys:
    """The keys of one shard: ``base`` is ``<prefix>:{s}:``."""

    prefix: str
    shard: int

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.shard}}}:"

    @property
    def ready(self) -> str:
        return self.base + "ready"

    @property
    def leased(self) -> str:
        return self.base + "leased"

    @property
    def leases(self) -> str:
        return self.base + "leases"

    @property
    def removed(self) -> str:
        return self.base + "removed"

    @property
    def parked(self) -> str:
        return self.base + "parked"

    @property
    def sweeps(self) -> str:
        return self.base + "sweeps"

    @property
    def wake(self) -> str:
        return self.base + "wake"

    def queue(self, flow_id: str) -> str:
        return f"{self.base}{flow_id}:q"

    def dead(self, flow_id: str) -> str:
        return f"{self.base}{flow_id}:dead"

    def dead_generation(self, flow_id: str) -> str:
        return f"{self.base}{flow_id}:dlgen"

    def reason(self, flow_id: str) -> str:
        return f"{self.base}{flow_id}:reason"

    @property
    def queue_pattern(self) -> str:
        """SCAN pattern of this shard's flow queues (the orphan scan)."""
        return f"{self.prefix}:{{{self.shard}}}:*:q"

    def flow_of_queue(self, key: str) -> str:
        return key[len(self.base) : -len(":q")]


@dataclass(frozen=True)
class Keys:
    prefix: str
    shards: int = 1

    def shard_of(self, flow_id: str) -> int:
        return zlib.crc32(flow_id.encode("ascii")) % self.shards if self.shards > 1 else 0

    def shard(self, index: int) -> ShardKeys:
        return ShardKeys(self.prefix, index)

    def for_flow(self, flow_id: str) -> ShardKeys:
        return ShardKeys(self.prefix, self.shard_of(flow_id))

    def all_shards(self) -> list[ShardKeys]:
        return [ShardKeys(self.prefix, s) for s in range(self.shards)]
