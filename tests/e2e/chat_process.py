"""Drives a real ``yibao chat`` process over its stdin and stdout, as a script would; and what the
tests of ``yibao run`` share about the process they start (``BotProcess``)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from insurance.sandbox import DemoPerson, SandboxPlatform

SMS = re.compile(r"📱 SMS → (?P<to>\S+): .*?(?P<code>\b\d{6}\b)")


def start_run(
    cwd: Path, settings: dict[str, str], log: Path, ready: str, timeout: float = 30
) -> subprocess.Popen[str]:
    """``yibao run`` with ``settings`` as its environment (nothing else of ours), once its log
    matches the regular expression ``ready``; an exit before that fails the test with its output."""
    import pytest

    process = subprocess.Popen(
        [*yibao_command(), "run"],
        cwd=cwd,
        env=clean_env(**settings),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout
    while not re.search(ready, log.read_text() if log.exists() else ""):
        if process.poll() is not None:
            pytest.fail(f"yibao run exited {process.returncode}: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("yibao run did not start")
        time.sleep(0.05)
    return process


@dataclass
class BotProcess:
    """A ``yibao run`` started by a test: its log, and the ``file`` SMS gateway's file."""

    process: subprocess.Popen[str]
    log: Path
    sms: Path

    def code_for(self, phone: str, after: int = 0, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sms.exists():
                lines = [json.loads(line) for line in self.sms.read_text(encoding="utf-8").splitlines()]
                mine = [line for line in lines[after:] if line["to"] == phone]
                if mine:
                    return re.search(r"\b(\d{6})\b", mine[-1]["text"])[1]  # type: ignore[index]
            time.sleep(0.05)
        raise AssertionError(f"no SMS to {phone[:3]}****")

    def sms_count(self) -> int:
        return len(self.sms.read_text(encoding="utf-8").splitlines()) if self.sms.exists() else 0

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        finally:
            if self.process.poll() is None:
                self.process.kill()


def demo(scenario: str) -> DemoPerson:
    return next(p for p in SandboxPlatform.from_file().people() if p.scenario.value == scenario)


def yibao_command() -> list[str]:
    script = Path(sys.executable).with_name("yibao")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot"]


class Chat:
    """A running ``yibao chat``: ``say`` sends one line and returns the answer block it printed."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*yibao_command(), "chat", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.transcript: list[str] = []

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def say(self, text: str, timeout: float = 15.0) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        block: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"chat ended after {text!r}: {self.stderr()}")
            if line == "\n":
                break
            block.append(line)
        answer = "".join(block)
        self.transcript += [f"> {text}", answer]
        return answer

    def code(self, answer: str) -> str:
        m = SMS.search(answer)
        assert m, answer
        return m["code"]

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=20)

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read() if self.proc.poll() is not None else ""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIBAO_")}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_line(chat: Chat, needle: str, timeout: float = 30.0) -> str:
    """The next line ``chat`` prints, unprompted, that holds ``needle`` (lines before it are dropped)."""
    deadline = time.monotonic() + timeout
    while True:
        line = chat.lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line is None:
            raise AssertionError(f"chat ended waiting for {needle!r}: {chat.stderr()}")
        if needle in line:
            return line
