"""Nothing a listener does grows without bound: change-feed pages and the change log are capped in
bytes, idempotency answers expire, and each user's writes are limited in rate and size."""

from __future__ import annotations

import json

from media import Catalog, listeners
from streamer import create_app
from streamer.http.write_limits import WriteLimits
from tests.conftest import make_user, settings_for, wait_for_scan


def _log(db, count: int, size: int) -> None:
    for i in range(count):
        listeners.append_change(db, None, "playlist.put", {"id": str(i), "blob": "x" * size})


async def test_change_pages_and_the_log_are_capped_in_bytes(tmp_path):
    catalog = Catalog(tmp_path / "catalog.db")
    try:
        db = catalog.db
        first = await db.read(listeners.last_sequence)
        await db.write(_log, 30, 200_000)  # 6 MB of changes
        page = await db.read(listeners.changes_since, first, 1000, 1_000_000)
        assert len(page) == 4 and sum(len(json.dumps(c["data"])) for c in page) <= 1_000_000  # 200 KB each
        one = await db.read(listeners.changes_since, first, 1000, 10)
        assert len(one) == 1  # a change bigger than the cap still comes, alone
        dropped = await db.write(listeners.compact_changes, "2000-01-01T00:00:00Z", 10**6, 1_000_000)
        kept = await db.read(lambda d: d.execute("SELECT COUNT(*), SUM(length(data)) FROM changes").fetchone())
        assert dropped >= 25 and kept[1] <= 1_000_000 and kept[0] >= 4
        assert await db.read(listeners.last_sequence) == first + 30  # the newest always stays
    finally:
        catalog.close()


async def test_idempotency_answers_expire(tmp_path):
    catalog = Catalog(tmp_path / "catalog.db")
    try:
        user, _ = await catalog.db.write(listeners.add_user, "ann", "listener")
        await catalog.db.write(listeners.apply, user, "playlist.create", {"name": "a", "track_ids": []}, "k1",
                               {"id": "p" * 16})
        assert await catalog.db.write(listeners.expire_answers, "2000-01-01T00:00:00Z") == 0
        assert await catalog.db.write(listeners.expire_answers, "2999-01-01T00:00:00Z") == 1
        plan = await catalog.db.read(lambda d: d.execute(
            "EXPLAIN QUERY PLAN DELETE FROM idempotency WHERE created_at < '2999'").fetchall())
        assert "idempotency_created_at" in str(plan)  # found by its index, not a scan
    finally:
        catalog.close()


def test_a_user_bucket_refills_at_its_rate():
    limits = WriteLimits(per_minute=60, max_bytes=1024)
    assert all(limits.take("ann", now=100.0) == 0 for _ in range(60))  # a burst of a minute's worth
    assert limits.take("ann", now=100.0) > 0.9  # then one a second
    assert limits.take("bob", now=100.0) == 0  # others are not held up
    assert limits.take("ann", now=101.0) == 0


async def test_writes_past_a_users_rate_or_size_are_refused(aiohttp_client, demo_library, tmp_path):
    app = create_app(settings_for(demo_library, tmp_path / "data", writes_per_minute=5, write_max_kb=2))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    ann, bob = await make_user(app, "ann"), await make_user(app, "bob")
    statuses = [(await client.put(f"/api/v1/favorites/tracks/{'0' * 16}", headers=ann)).status for _ in range(7)]
    assert statuses[:5] != [429] * 5 and statuses[5:] == [429, 429]
    refused = await client.put(f"/api/v1/favorites/tracks/{'0' * 16}", headers=ann)
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    assert (await refused.json())["error"]["code"] == "too_many_writes"
    big = await client.post("/api/v1/playlists", json={"name": "x", "track_ids": ["0" * 16] * 200}, headers=bob)
    assert big.status == 413 and (await big.json())["error"]["code"] == "payload_too_large"
    assert (await client.post("/api/v1/playlists", json={"name": "fine"}, headers=bob)).status == 201
