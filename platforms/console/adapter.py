"""The terminal as a chat platform, in the same shape as the Telegram adapter.

Interactive (a terminal on both ends): a prompt, replies as they come, unprompted messages (SMS in
the demo, alerts later) printed above the prompt as they arrive. Scripted (stdin is not a terminal):
one message per input line, the replies printed after it and then one empty line (empty lines
inside a reply are left out), so another program can tell where the answer to each line ends. Every
line is answered: an empty one, or one of only whitespace (a tab, U+3000, U+2028...), is the empty
message. When the reader of stdout goes away (``yibao chat | head -1``), the chat ends quietly.
Buttons are listed with numbers; typing the number presses the button. A reply's file (a chart) is
saved in the user's own folder under ``files_dir``, its name starting with the user, and never over
another file; its path is printed. When a reply says the user was erased (``/unbind``), that folder
goes too. A language chosen on the command line (``choose_locale``) is the user's choice: it is set
once at start, as ``/lang`` would, so a language stored earlier does not silently win over it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TextIO

from dialogs.models import Button, Inbound, Reply, UserKey

Handler = Callable[[Inbound], Awaitable[Sequence[Reply]]]

log = logging.getLogger(__name__)

_EOF = object()


class OutputClosed(Exception):
    """Nobody reads the console's output any more (a closed pipe): the chat is over."""


class ConsoleAdapter:
    platform = "console"

    def __init__(
        self,
        *,
        user_id: str = "local",
        locale: str | None = None,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        interactive: bool | None = None,
        files_dir: Path | None = None,
        choose_locale: bool = False,
    ) -> None:
        self.user = UserKey(f"{self.platform}:{user_id}")
        self.user_id = user_id
        self.choose_locale = choose_locale and locale is not None
        self.files_dir = files_dir or Path(".")
        self.locale = locale
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.interactive = (
            interactive if interactive is not None else (self.stdin.isatty() and self.stdout.isatty())
        )
        self.prompt = "你 › " if (locale or "zh").startswith("zh") else "you › "
        self._buttons: tuple[Button, ...] = ()
        self._waiting_for_input = False
        self._inbox: asyncio.Queue[object] | None = None
        self._output_closed = False

    # -- output --------------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        if self._output_closed:
            raise OutputClosed
        try:
            self.stdout.write(text)
            self.stdout.flush()
        except BrokenPipeError:
            self._close_output()
            raise OutputClosed from None

    def _close_output(self) -> None:
        """The reader is gone: stop chatting, and point the descriptor at /dev/null, so that what is
        still buffered (and the interpreter's last flush at exit) has somewhere to go."""
        self._output_closed = True
        if self._inbox is not None:
            self._inbox.put_nowait(_EOF)
        try:
            fd = self.stdout.fileno()
        except (OSError, ValueError):  # not a file (a test's StringIO), or closed
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)

    def _render(self, replies: Sequence[Reply]) -> None:
        for reply in replies:
            text = reply.text_with_link()
            if self.interactive:
                lines = text.splitlines() or [""]
                self._write("Yibao › " + "\n        ".join(lines) + "\n")
            else:
                self._write("".join(line + "\n" for line in text.splitlines() if line.strip()))
            if reply.attachment is not None:
                path = self._save(reply.attachment.filename, reply.attachment.content)
                self._write(("        " if self.interactive else "") + f"🖼 {path}\n")
            if reply.buttons:
                self._buttons = reply.buttons
                choices = "   ".join(f"[{i}] {b.label}" for i, b in enumerate(reply.buttons, 1))
                self._write(("        " if self.interactive else "") + choices + "\n")
        if not self.interactive:
            self._write("\n")

    def user_files(self) -> Path:
        """The folder of this user's files: nobody else's go there, so erasing it erases theirs."""
        name = re.sub(r"[^A-Za-z0-9._-]", "_", self.user_id)
        return self.files_dir / (name if name.strip(".") else name.replace(".", "_"))

    def _save(self, filename: str, content: bytes) -> Path:
        """Write a reply's file (0600: a chart shows someone's money) under a name of this user's
        that no earlier file has, and return where it went."""
        folder = self.user_files()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{self.user_id}-{filename}")
        stem, dot, ext = safe.rpartition(".")
        if not dot:
            stem, ext = safe, ""
        for n in range(1, 10_000):
            name = safe if n == 1 else f"{stem}-{n}{dot}{ext}"
            path = (folder / name).resolve()
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            return path
        raise FileExistsError(f"no free file name for {safe} in {folder}")

    def _erase_files(self) -> None:
        """The user was erased: their files go too (a chart shows their money)."""
        try:
            shutil.rmtree(self.user_files())
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("could not delete the erased user's files in %s: %s", self.user_files(), e)

    def _unprompted(self, text: str) -> None:
        if self.interactive and self._waiting_for_input:
            self._write("\r\033[K" + text + "\n" + self.prompt)
        else:
            self._write(text + "\n")

    async def deliver(self, user: UserKey, replies: tuple[Reply, ...]) -> None:
        """An unprompted message (the ``Outlet`` port)."""
        if user != self.user:
            return
        if any(reply.erased for reply in replies):  # erased from a page: the files go too
            self._erase_files()
        for reply in replies:
            self._unprompted(reply.text_with_link())

    async def show_sms(self, masked_to: str, text: str) -> None:
        """The console SMS gateway: the SMS shows up in the chat, addressed to the masked number."""
        # When the output is closed the chat is ending: the reply to this message goes unread too.
        with contextlib.suppress(OutputClosed):
            self._unprompted(f"📱 SMS → {masked_to}: {text}")

    # -- input ---------------------------------------------------------------------------------

    def _start_reader(
        self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object], ready: threading.Event
    ) -> None:
        """Reads on a daemon thread, so a pending read never holds up the exit."""

        def read() -> None:
            while True:
                ready.wait()
                ready.clear()
                try:
                    if self.interactive:
                        self._waiting_for_input = True
                        line: object = input(self.prompt) + "\n"
                    else:
                        line = self.stdin.readline() or _EOF
                except EOFError:
                    line = _EOF
                except UnicodeDecodeError:
                    line = "\n"
                finally:
                    self._waiting_for_input = False
                loop.call_soon_threadsafe(queue.put_nowait, line)
                if line is _EOF:
                    return

        threading.Thread(target=read, name="console-reader", daemon=True).start()

    async def run(self, handle: Handler) -> None:
        """Chat until end of input, or until nobody reads the output."""
        with contextlib.suppress(OutputClosed):
            await self._chat(handle)

    async def _chat(self, handle: Handler) -> None:
        queue: asyncio.Queue[object] = asyncio.Queue()
        self._inbox = queue
        ready = threading.Event()
        self._start_reader(asyncio.get_running_loop(), queue, ready)
        if self.interactive:
            self._write(
                "Yibao — 医保余额查询 / medical-insurance balance. /start to begin, Ctrl-D to leave.\n"
            )
        if self.choose_locale:
            # As if the user sent /lang: shown at a terminal; in a script it answers no line, so it
            # prints nothing there (each printed block answers one input line).
            replies = await handle(Inbound(user=self.user, text=f"/lang {self.locale}", locale=self.locale))
            if self.interactive:
                self._render(replies)
        while True:
            ready.set()
            line = await queue.get()
            if line is _EOF or not isinstance(line, str):
                break
            text = line.strip()  # str.strip: every Unicode whitespace, U+3000 and U+2028 included
            if not text and self.interactive:
                continue  # a person just gets the prompt again
            if self._buttons and text.isdigit() and 1 <= int(text) <= len(self._buttons):
                text = self._buttons[int(text) - 1].payload
            self._buttons = ()
            replies = await handle(Inbound(user=self.user, text=text, locale=self.locale))
            if any(reply.erased for reply in replies):
                self._erase_files()
            self._render(replies)
        if self.interactive:
            self._write("\n")
