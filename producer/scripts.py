"""The queue protocol's Lua scripts, read once from producer/lua/*.lua and registered per client.

Each script is ``lib.lua`` (the helpers they share) followed by its own file, run by EVALSHA
(one round trip; redis-py loads it again after a server restart).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from redis import Redis
from redis.commands.core import Script

_LUA_DIR = Path(__file__).with_name("lua")
SCRIPT_NAMES = ("emit", "claim", "ack", "resume", "recover", "sweep_end", "spawn")


@cache
def source(name: str) -> str:
    lib = (_LUA_DIR / "lib.lua").read_text(encoding="utf-8")
    return lib + "\n" + (_LUA_DIR / f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Scripts:
    emit: Script
    claim: Script
    ack: Script
    resume: Script
    recover: Script
    sweep_end: Script
    spawn: Script

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        return cls(*(redis.register_script(source(n)) for n in SCRIPT_NAMES))
