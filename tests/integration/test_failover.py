"""The primary (Sentinel) or one master (Cluster) killed with SIGKILL in the middle of a run of binds:
the same client carries on once a replica has taken over, with no restart, and every bind Yibao was
told a replica had (``WAIT``) is on the new primary. And a cluster resharded under a run of binds
and reads. Each test starts a topology of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from redis_topologies import ClusterSet, SentinelSet, missing_tools

from bot.config import RedisSettings
from bot.crypto.pii import PiiCipher, new_key_text, parse_key
from bot.storage.codec import StateCodec
from bot.storage.connect import Topology, connect
from bot.storage.keys import Keys, UserKind
from bot.storage.store import RedisStore, UserBusy
from dialogs.models import Binding, MemberId, Outcome, PlatformName, Session, UserKey, UserState
from dialogs.ports import StoreUnavailable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools())),
]

USERS = 80
KILL_AT = 30
RESTART_AT = 35
"""The killed server is started again (as an operator would), and comes back as a replica: until
then the new primary has no replica, and binds stand on it alone (told, and not counted as confirmed)."""
RESUME_WITHIN = 30.0


async def bind(state: UserState) -> Outcome:
    binding = Binding(
        member_id=MemberId("SBX-110000-0001"),
        platform=PlatformName("sandbox"),
        id_number=SecretStr("110101198312116939"),
        phone=SecretStr("13000000000"),
        bound_at=datetime.now(UTC),
    )
    return Outcome(replies=(), session=Session(), set_binding=binding)


async def binds_through_a_failover(
    settings: dict[str, Any], kill: Callable[[], None], restart: Callable[[], None], *, replica_back: bool
) -> None:
    """``replica_back``: the restarted server is a replica again before the run ends, so the last
    binds are confirmed again (a cluster's node knows at once; Sentinel turns an old primary into a
    replica only after it has reported itself a primary for some seconds)."""
    # A short WAIT: until the killed server is back as a replica, every bind waits this long in vain.
    client, topology = connect(RedisSettings(**settings, wait_timeout_ms=100))
    store = RedisStore(
        client,
        keys=Keys(),
        codec=StateCodec(PiiCipher(parse_key(new_key_text()))),
        session_ttl_seconds=1800,
        lock_seconds=1.0,  # a guard taken on the old primary just before it died ends soon
        lock_wait_seconds=0.5,
        topology=topology,
    )
    try:
        confirmed, refused, outage = await _bind_all(store, topology, kill, restart)
        assert refused > 0, "the kill did not land in the middle of the run"
        assert outage < RESUME_WITHIN
        assert len(confirmed) >= KILL_AT
        if replica_back:
            assert UserKey(f"tg:{9_000 + USERS - 1}") in confirmed
        missing = [
            user for user in confirmed if not await client.hexists(Keys().user(user, UserKind.PROFILE), "b")
        ]
        assert missing == []
    finally:
        await client.aclose()
        await topology.aclose()


async def _bind_all(
    store: RedisStore, topology: Topology, kill: Callable[[], None], restart: Callable[[], None]
) -> tuple[list[UserKey], int, float]:
    """Bind every user in turn, killing at ``KILL_AT``; a refused bind (the apology a user would
    see) is tried again until it goes through. Returns the binds a replica confirmed, how many
    tries were refused, and the longest one user waited for their bind."""
    confirmed: list[UserKey] = []
    refused = 0
    longest = 0.0
    for n in range(USERS):
        user = UserKey(f"tg:{9_000 + n}")
        if n == KILL_AT:
            kill()
        if n == RESTART_AT:
            await asyncio.to_thread(restart)
        first_try = time.monotonic()
        while True:
            unprotected = topology.unprotected
            try:
                await store.update(user, bind)
            except (StoreUnavailable, UserBusy):
                refused += 1
                assert time.monotonic() - first_try < RESUME_WITHIN, "the service did not resume"
                await asyncio.sleep(0.1)
                continue
            longest = max(longest, time.monotonic() - first_try)
            if topology.unprotected == unprotected:
                confirmed.append(user)
            break
    return confirmed, refused, longest


@pytest.fixture
async def sentinels(tmp_path: Path) -> AsyncIterator[SentinelSet]:
    servers = SentinelSet(tmp_path / "sentinel").start()
    yield servers
    servers.stop()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[ClusterSet]:
    servers = ClusterSet(tmp_path / "cluster").start()
    yield servers
    servers.stop()


async def test_binds_survive_the_primary_killed_under_sentinel(sentinels: SentinelSet) -> None:
    primary = sentinels.current_primary()
    await binds_through_a_failover(sentinels.settings(), primary.kill, primary.start, replica_back=False)
    assert sentinels.current_primary() is not primary


async def test_binds_survive_a_master_killed_in_a_cluster(cluster: ClusterSet) -> None:
    seed = cluster.nodes[0]  # the node the client was given: the worst one to lose
    assert seed in cluster.live_masters()
    await binds_through_a_failover(cluster.settings(), seed.kill, seed.start, replica_back=True)
    cluster.wait_ok()
    assert len(cluster.live_masters()) == cluster.masters


async def test_binds_and_reads_go_on_while_slots_move(cluster: ClusterSet) -> None:
    """``redis-cli --cluster reshard`` moves a third of the slots, with their keys, while users bind
    and their state is read back (single reads and the batched ones): clients meet ASK and MOVED,
    follow them, and nothing is lost or read wrong."""
    client, topology = connect(RedisSettings(**cluster.settings()))
    store = RedisStore(
        client,
        keys=Keys(),
        codec=StateCodec(PiiCipher(parse_key(new_key_text()))),
        session_ttl_seconds=1800,
        topology=topology,
    )
    source, target = cluster.live_masters()[:2]
    moving = asyncio.create_task(asyncio.to_thread(cluster.reshard, source, target, 3000))
    users: list[UserKey] = []
    refused = 0
    try:
        n = 0
        while not moving.done() or n < 50:
            user = UserKey(f"tg:{20_000 + n}")
            try:
                await store.update(user, bind)
            except (StoreUnavailable, UserBusy):
                refused += 1  # the apology, at worst; the user tries again
                await asyncio.sleep(0.05)
                continue
            users.append(user)
            n += 1
            if n % 10 == 0:  # a burst of peeks, read together across slots
                states = await asyncio.gather(*(store.peek(u) for u in users[-10:]))
                assert all(s.profile.binding is not None for s in states)
        await moving
        states = await asyncio.gather(*(store.peek(u) for u in users))
        assert [s.profile.binding is not None for s in states] == [True] * len(users)
        assert refused <= len(users) // 10
    finally:
        if not moving.done():
            await moving
        await client.aclose()
        await topology.aclose()
