"""The queue protocol's Lua scripts, read once from producer/lua/*.lua and registered per client."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from redis import Redis
from redis.commands.core import Script

_LUA_DIR = Path(__file__).with_name("lua")


@cache
def source(name: str) -> str:
    return (_LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Scripts:
    """Each script runs by EVALSHA (one round trip), loaded again by redis-py after a restart."""

    emit: Script
    ack: Script
    release: Script
    deadletter: Script
    resume: Script

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        return cls(
            *(
                redis.register_script(source(n))
                for n in ("emit", "ack", "release", "deadletter", "resume")
            )
        )
