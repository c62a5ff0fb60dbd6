"""The test fixtures cannot hurt the machine: a session uses and flushes only a Redis DB it
claimed empty, and drops only PostgreSQL databases it created.

Every DB these tests touch besides the session's own is claimed first through the same
mechanism (so it was empty); the only keys written into an unclaimed DB are the tests' own
``FOREIGN_KEY`` probes, deleted by name afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
import redis
from psycopg import sql

from chem_persistence.eventlog.config import url_with_database
from tests.conftest import (
    REDIS_AUTO_ORDER,
    REDIS_DB_ENV,
    SESSION_ID,
    NotOurDatabase,
    create_database,
    drop_database,
)
from tests.redis_claim import CLAIM_KEY, ClaimLost, ClaimRefused, RedisClaim

FOREIGN_KEY = "chem-test-isolation:someone-elses-key"


def database_exists(admin_url: str, name: str) -> bool:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name]).fetchone()
    return row == (1,)


@pytest.fixture
def spare_claim(redis_claim: RedisClaim) -> Iterator[RedisClaim]:
    """A second free DB, claimed for a made-up session (released at the end)."""
    others = [db for db in REDIS_AUTO_ORDER if db != redis_claim.db]
    claim = RedisClaim.take_free(redis_claim.base_url, others, f"other-{secrets.token_hex(4)}")
    try:
        yield claim
    finally:
        claim.release()


# --- Redis ---------------------------------------------------------------------------------


def test_the_session_db_carries_this_sessions_claim_and_nothing_else(
    redis_claim: RedisClaim, redis_conn: redis.Redis, key_prefix: str
) -> None:
    assert 1 <= redis_claim.db <= 15
    assert redis_conn.connection_pool.connection_kwargs["db"] == redis_claim.db
    requested = os.environ.get(REDIS_DB_ENV)
    if requested:
        assert redis_claim.db == int(requested)  # TEST_REDIS_DB is honoured
    assert redis_conn.keys("*") == [CLAIM_KEY.encode()]  # flushed for this test, still claimed
    assert redis_conn.get(CLAIM_KEY) == SESSION_ID.encode()
    assert redis_claim.holds()
    redis_conn.set(f"{key_prefix}:probe", "1")
    assert key_prefix.startswith("chemtest")


def test_another_session_cannot_claim_this_sessions_db(redis_claim: RedisClaim) -> None:
    with pytest.raises(ClaimRefused, match=SESSION_ID):
        RedisClaim.take(redis_claim.base_url, redis_claim.db, "some-other-session")
    assert redis_claim.holds()


def test_a_non_empty_db_without_a_claim_is_refused_and_never_flushed(
    spare_claim: RedisClaim,
) -> None:
    client = redis.Redis.from_url(spare_claim.url)
    try:
        # Make the spare DB look like another program's: a key, and no claim.
        client.set(FOREIGN_KEY, "precious")
        client.delete(CLAIM_KEY)
        with pytest.raises(ClaimRefused, match="not claimed by a test"):
            RedisClaim.take(spare_claim.base_url, spare_claim.db, SESSION_ID)
        with pytest.raises(ClaimLost):
            spare_claim.flush()  # its claim is gone: it flushes nothing
        assert not spare_claim.release()
        assert client.get(FOREIGN_KEY) == b"precious"
        # auto-selection passes over it too
        with pytest.raises(ClaimRefused):
            RedisClaim.take_free(spare_claim.base_url, [spare_claim.db], SESSION_ID)
        assert client.get(FOREIGN_KEY) == b"precious"
    finally:
        client.delete(FOREIGN_KEY)  # the one key this test wrote there, by name
        client.close()


def test_a_claim_taken_over_by_someone_else_is_never_flushed(spare_claim: RedisClaim) -> None:
    client = redis.Redis.from_url(spare_claim.url)
    try:
        client.set(FOREIGN_KEY, "theirs")
        client.set(CLAIM_KEY, "a-session-that-took-over")
        with pytest.raises(ClaimLost):
            spare_claim.flush()
        assert client.get(FOREIGN_KEY) == b"theirs"
    finally:
        client.delete(FOREIGN_KEY, CLAIM_KEY)
        client.close()


def test_claim_flush_and_release_of_an_empty_db(spare_claim: RedisClaim) -> None:
    client = redis.Redis.from_url(spare_claim.url)
    try:
        assert RedisClaim.take(spare_claim.base_url, spare_claim.db, spare_claim.session)
        client.set("chem-test-isolation:mine", "1")
        spare_claim.flush()
        assert client.keys("*") == [CLAIM_KEY.encode()]
        assert spare_claim.release()
        assert client.dbsize() == 0  # given back empty
        assert not spare_claim.holds()
    finally:
        client.close()


# --- PostgreSQL ------------------------------------------------------------------------------


def test_drop_database_refuses_a_database_this_session_did_not_create(admin_url: str) -> None:
    name = f"chem_foreign_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with pytest.raises(NotOurDatabase, match=name):
            drop_database(admin_url, url_with_database(admin_url, name))
        assert database_exists(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))


def test_a_database_this_session_created_is_dropped_once(admin_url: str) -> None:
    url = create_database(admin_url, suffix="_iso")
    name = url.rsplit("/", 1)[1].split("?")[0]
    assert database_exists(admin_url, name)
    drop_database(admin_url, url)
    assert not database_exists(admin_url, name)
    with pytest.raises(NotOurDatabase):  # forgotten once dropped
        drop_database(admin_url, url)
