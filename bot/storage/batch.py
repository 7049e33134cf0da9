"""Several commands in one round trip, on any topology, and the writes that wait for a replica.

:func:`send` fills a pipeline (without MULTI) and sends it. On one Redis that is one round trip; on a
Cluster, redis-py's ``ClusterPipeline`` splits it by node and sends the parts in parallel, so a batch
over many users' keys costs one round trip per master, not one per user. A script the server does not
know (a Redis that restarted, or a replica just promoted: the script cache is not replicated) is
loaded on every master and the whole batch sent again, so every command in a batch must be harmless
to repeat.

``protect``: the key of a write that must survive the loss of its primary. ``WAIT n timeout`` is
sent last, in the same pipeline, to the node that holds that key, so it runs on the connection that
made the write and returns once ``n`` replicas have it. Fewer within the timeout is logged: the write
then stands on the primary alone, and a failover right after it could lose it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from bot.storage.connect import Topology

log = logging.getLogger(__name__)

WARN_EVERY = 60.0
"""Seconds between two warnings about writes that did not reach their replicas."""

Fill = Callable[[Pipeline], Awaitable[None] | None]


def as_cluster(client: Redis) -> RedisCluster | None:
    """The client as the ``RedisCluster`` it is, or None for one Redis (single or Sentinel)."""
    candidate = cast("object", client)
    return candidate if isinstance(candidate, RedisCluster) else None


async def send(
    client: Redis,
    fill: Fill,
    *,
    scripts: Iterable[AsyncScript] = (),
    topology: Topology | None = None,
    protect: Iterable[str] = (),
) -> list[Any]:
    """The results of the commands ``fill`` queued, in order (see the module docstring)."""
    guarded = list(protect)
    guard = topology if topology is not None and guarded and topology.wait_replicas else None
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        filled = fill(pipe)
        if filled is not None:
            await filled
        waits = 0 if guard is None else _queue_waits(client, pipe, guarded, guard)
        try:
            results: list[Any] = await pipe.execute()
        except NoScriptError:
            if attempt == 2:
                raise
            for script in scripts:
                script.sha = await client.script_load(script.script)
            continue
        if guard is not None and waits:
            acked = [int(n) for n in results[-waits:]]
            del results[-waits:]
            if min(acked) < guard.wait_replicas:
                guard.unprotected += 1
                now = time.monotonic()
                if now - guard.warned_at >= WARN_EVERY:
                    guard.warned_at = now
                    log.warning(
                        "a write to %s reached %d of %d replicas within %d ms; it stands on the primary "
                        "alone (%d such writes so far; said again at most every %.0f s)",
                        guarded[0] if len(guarded) == 1 else f"{len(guarded)} keys",
                        min(acked),
                        guard.wait_replicas,
                        guard.wait_timeout_ms,
                        guard.unprotected,
                        WARN_EVERY,
                    )
        return results
    raise AssertionError("unreachable")


def _queue_waits(client: Redis, pipe: Pipeline, keys: list[str], topology: Topology) -> int:
    """Queue one WAIT on each node that holds one of ``keys``; returns how many."""
    cluster = as_cluster(client)
    if cluster is None:
        pipe.execute_command("WAIT", topology.wait_replicas, topology.wait_timeout_ms)
        return 1
    nodes = {node.name: node for node in map(cluster.get_node_from_key, keys) if node is not None}
    for node in nodes.values():
        pipe.execute_command("WAIT", topology.wait_replicas, topology.wait_timeout_ms, target_nodes=node)
    return len(nodes)


def call(pipe: Pipeline, script: AsyncScript, keys: list[str], args: Iterable[Any] = ()) -> None:
    """Queue ``script`` on ``pipe`` as a bare EVALSHA: no ``SCRIPT EXISTS`` round trip first, as
    redis-py's own pipeline would add; a server without it makes :func:`send` load it and resend."""
    # execute_command: redis-py's ClusterPipeline blocks its evalsha method, though it routes the
    # command itself by its keys (all of one slot) like any other.
    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)


CROSS_SLOT = "#!lua flags=allow-cross-slot-keys\n"
"""A script with this first line may use keys of several slots, as long as the node it runs on holds
them all (Redis 7.0+). Such keys cannot be declared (a cluster refuses declared keys of several
slots), so the script takes their names in ARGV: how a read over many users' keys stays one command
per master on a cluster."""


async def per_node(cluster: RedisCluster, script: AsyncScript, groups: list[list[str]]) -> list[Any] | None:
    """``script`` (one that starts with :data:`CROSS_SLOT`, takes key names in ARGV and answers one
    value per group of keys) run once per master over the groups of keys it holds, in parallel; the
    answers in the order of ``groups``. None if the cluster would not have it (a slot moving, a Redis
    older than 7.0): the caller then falls back to one command per group."""
    by_node: dict[str, tuple[Any, list[int]]] = {}
    for i, keys in enumerate(groups):
        node = cluster.get_node_from_key(keys[0])
        if node is None:
            return None
        by_node.setdefault(node.name, (node, []))[1].append(i)

    async def one(node: Any, members: list[int]) -> list[Any]:
        keys = [key for i in members for key in groups[i]]
        command: list[str | int] = ["EVALSHA", script.sha, 0, *keys]
        try:
            answer: list[Any] = await cluster.execute_command(*command, target_nodes=node)
        except NoScriptError:
            await cluster.execute_command("SCRIPT", "LOAD", script.script, target_nodes=node)
            answer = await cluster.execute_command(*command, target_nodes=node)
        return answer

    try:
        answers = await asyncio.gather(*(one(node, members) for node, members in by_node.values()))
    except ResponseError as e:
        log.info("a read over several slots fell back to one command per user (%s)", e)
        return None
    out: list[Any] = [None] * len(groups)
    for (_, members), answer in zip(by_node.values(), answers, strict=True):
        for i, value in zip(members, answer, strict=True):
            out[i] = value
    return out
