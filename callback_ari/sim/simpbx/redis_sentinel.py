"""A real replicated Redis on loopback: one master, replicas and three Sentinels, for tests.

Debian's ``redis-sentinel`` runs the sentinels (``redis-server --sentinel`` when only
``redis-server`` is installed: it is the same program). Ports are free ones, every file is in
a temporary directory, nothing is shared with another test or with a system Redis.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from callback_ari.sim.simpbx.redis_process import RedisProcess, free_port

MASTER_NAME = "cbmaster"


def _command(port: int, *words: str, lines: int = 1) -> str:
    """One inline command to a local Redis or Sentinel; the reply, at least ``lines`` lines
    of it (an error or a nil reply is one line)."""
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
        s.sendall((" ".join(words) + "\r\n").encode())
        data = b""
        while data.count(b"\r\n") < lines and not data.startswith((b"-", b"*-1", b"$-1")):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace")


def info(port: int, section: str = "replication") -> dict[str, str]:
    """``INFO <section>`` of a local Redis as a dict (empty when it does not answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
        s.sendall(f"INFO {section}\r\n".encode())
        head = b""
        while b"\r\n" not in head:
            chunk = s.recv(65536)
            if not chunk:
                return {}
            head += chunk
        first, _, rest = head.partition(b"\r\n")
        size = int(first[1:])
        while len(rest) < size:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
    out: dict[str, str] = {}
    for line in rest.decode().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key] = value
    return out


class SentinelProcess:
    """One sentinel watching ``MASTER_NAME``; quick to decide (1 s down, quorum 2)."""

    def __init__(self, master_port: int, directory: Path) -> None:
        self.port = free_port()
        self._dir = directory
        self._master_port = master_port
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self._dir / f"sentinel-{self.port}.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {self._dir}\n"
            f"logfile {self._dir / f'sentinel-{self.port}.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self._master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 10000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )  # the sentinel rewrites this file: it must live in our temporary directory
        sentinel = shutil.which("redis-sentinel")
        server = shutil.which("redis-server")
        if sentinel is not None:
            args = [sentinel, str(conf)]
        elif server is not None:
            args = [server, str(conf), "--sentinel"]
        else:
            raise RuntimeError("redis-sentinel is not installed: apt-get install -y redis-sentinel")
        self._proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-sentinel exited with {self._proc.returncode}")
            try:
                if _command(self.port, "PING").startswith("+PONG"):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-sentinel did not answer within 10 s")

    def master_port(self) -> int | None:
        """The master's port as this sentinel sees it."""
        try:
            reply = _command(self.port, "SENTINEL", "get-master-addr-by-name", MASTER_NAME, lines=5)
        except OSError:
            return None
        lines = reply.split("\r\n")
        return int(lines[4]) if len(lines) > 4 and lines[4].isdigit() else None

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


class SentinelSet:
    """A master, ``replicas`` replicas and three sentinels; ``kill_master`` starts a failover."""

    def __init__(self, replicas: int = 1) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="cbari-sentinel-")
        self.master = RedisProcess()
        self.replicas = [
            RedisProcess(extra_args=("--replicaof", "127.0.0.1", str(self.master.port)))
            for _ in range(replicas)
        ]
        self.sentinels = [SentinelProcess(self.master.port, Path(self._dir.name)) for _ in "abc"]

    @property
    def sentinel_addresses(self) -> tuple[str, ...]:
        return tuple(f"127.0.0.1:{s.port}" for s in self.sentinels)

    @property
    def nodes(self) -> list[RedisProcess]:
        return [self.master, *self.replicas]

    def start(self, timeout: float = 20.0) -> None:
        self.master.start()
        for replica in self.replicas:
            replica.start()
        self.wait_replicated(timeout)
        for sentinel in self.sentinels:
            sentinel.start()
        # every sentinel must know the replicas and each other before a failover can work
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._sentinel_ready(s) for s in self.sentinels):
                return
            time.sleep(0.1)
        raise RuntimeError("sentinels did not discover the replicas and each other in time")

    def _sentinel_ready(self, sentinel: SentinelProcess) -> bool:
        try:
            master = info(sentinel.port, "sentinel").get("master0", "")
        except OSError:
            return False
        return f"slaves={len(self.replicas)},sentinels={len(self.sentinels)}" in master

    def wait_replicated(self, timeout: float = 20.0) -> None:
        """Until every replica's link to the master is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ok = all(info(r.port).get("master_link_status") == "up" for r in self.replicas)
            except OSError:
                ok = False
            if ok:
                return
            time.sleep(0.05)
        raise RuntimeError("replicas did not sync with the master in time")

    def kill_master(self) -> int:
        """SIGKILL the current master (no shutdown save, no goodbye); returns its port."""
        port = self.current_master_port()
        victim = next(n for n in self.nodes if n.port == port)
        victim.stop(kill=True)
        return port

    def revive(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node again; return once it is a synced replica of the current master
        (the spare the next failover needs). Its data is gone, so it comes back as a replica
        that is not promotable (``replica-priority 0``) until its sync is done: promoted empty,
        it would wipe every key (a second failover soon after the first can pick it)."""
        node = next(n for n in self.nodes if n.port == port)
        master_port = self.current_master_port()
        node._extra = ("--replicaof", "127.0.0.1", str(master_port), "--replica-priority", "0")
        node.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = info(port)
                master = self.current_master_port()
            except (OSError, RuntimeError):
                state, master = {}, None
            if (
                state.get("role") == "slave"
                and state.get("master_port") == str(master)
                and state.get("master_link_status") == "up"
            ):
                _command(port, "CONFIG", "SET", "replica-priority", "100")
                return
            time.sleep(0.1)
        raise RuntimeError(f"the revived node {port} did not become a synced replica in time")

    def current_master_port(self) -> int:
        for sentinel in self.sentinels:
            port = sentinel.master_port()
            if port is not None:
                return port
        raise RuntimeError("no sentinel answers")

    def wait_promoted(self, old_port: int, timeout: float = 30.0) -> int:
        """Until the sentinels name a master other than ``old_port`` that says it is master."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ports = {s.master_port() for s in self.sentinels}
            port = next(iter(ports)) if len(ports) == 1 else None
            if port is not None and port != old_port:
                try:
                    if info(port).get("role") == "master":
                        return port
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("no replica was promoted in time")

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes:
            node.close()
        self._dir.cleanup()

    def __enter__(self) -> SentinelSet:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
