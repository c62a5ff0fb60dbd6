"""A test session's provable ownership of one Redis DB.

A session may use (and flush) a Redis DB only after claiming it: one Lua call that, atomically,
finds the DB holding nothing at all and writes the ownership key ``CLAIM_KEY`` with the
session's id. From then on every key in that DB was written by this session (or by the
processes it started), so flushing it loses nothing of anybody else's. Every flush is one Lua
call too, and happens only while the ownership key still holds this session's id; the per-test
flush writes the key back in the same call. A DB that holds anything without this session's
claim is refused, never flushed: its keys may be another program's, or another session's.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import redis

#: The ownership key of a claimed DB; its value is the owning session's id.
CLAIM_KEY = "chem-test:claim"

# KEYS[1] claim key; ARGV[1] session id. 1: claimed (or already ours); 0: refused.
_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then return 1 end
if owner == false and redis.call('DBSIZE') == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""

# KEYS[1] claim key; ARGV[1] session id; ARGV[2] 'keep' (flush, stay owner) or 'release'.
# 1: flushed; 0: not ours (nothing touched).
_FLUSH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('FLUSHDB')
if ARGV[2] == 'keep' then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


class ClaimRefused(RuntimeError):
    """The DB is not empty and not this session's: it is never used nor flushed."""


class ClaimLost(RuntimeError):
    """The DB's ownership key no longer names this session: nothing is flushed."""


def new_session_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"


def db_url(base_url: str, db: int) -> str:
    return f"{base_url.rstrip('/')}/{db}"


@dataclass(frozen=True)
class RedisClaim:
    base_url: str
    db: int
    session: str

    @property
    def url(self) -> str:
        return db_url(self.base_url, self.db)

    def _client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    @classmethod
    def take(cls, base_url: str, db: int, session: str) -> RedisClaim:
        """Claim ``db`` for ``session``; ClaimRefused if it holds anything not ours."""
        claim = cls(base_url, db, session)
        client = claim._client()
        try:
            if client.eval(_CLAIM, 1, CLAIM_KEY, session) == 1:
                return claim
            raw = client.get(CLAIM_KEY)
            owner = raw.decode() if isinstance(raw, bytes) else raw
            size = client.dbsize()
        finally:
            client.close()
        whose = f"claimed by test session {owner!r}" if owner else "not claimed by a test"
        raise ClaimRefused(
            f"Redis DB {db} at {base_url} holds {size} key(s) and is {whose}: refusing to use "
            "or flush it"
        )

    @classmethod
    def take_free(cls, base_url: str, dbs: Iterable[int], session: str) -> RedisClaim:
        """Claim the first of ``dbs`` that is empty (or already ours)."""
        refused = []
        for db in dbs:
            try:
                return cls.take(base_url, db, session)
            except ClaimRefused as exc:
                refused.append(str(exc))
        raise ClaimRefused("no free Redis DB: " + "; ".join(refused))

    def holds(self) -> bool:
        client = self._client()
        try:
            owner = client.get(CLAIM_KEY)
        finally:
            client.close()
        return isinstance(owner, bytes) and owner.decode() == self.session

    def _flush(self, mode: str) -> bool:
        client = self._client()
        try:
            return bool(client.eval(_FLUSH, 1, CLAIM_KEY, self.session, mode) == 1)
        finally:
            client.close()

    def flush(self) -> None:
        """Empty the DB and keep owning it; ClaimLost (nothing touched) if it is not ours."""
        if not self._flush("keep"):
            raise ClaimLost(
                f"Redis DB {self.db} at {self.base_url} is no longer claimed by this test "
                f"session ({self.session}): not flushing it"
            )

    def release(self) -> bool:
        """Empty the DB and give it up; False (nothing touched) if it was not ours any more."""
        return self._flush("release")
