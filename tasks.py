"""Developer tasks that need nothing but Python 3.11+: ``python3 tasks.py demo|test [args...]``.

Both create ``.venv`` if needed and (re)install the project into it only when ``pyproject.toml`` or the
wanted extras changed since the last install; a stamp file inside ``.venv`` remembers which.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".yibao-install-stamp"
PIP_QUIET = ["-q", "--disable-pip-version-check"]
MAX_WORKERS = 8
_ONE_PROCESS = (
    "-n",
    "--numprocesses",
    "--dist",
    "--pdb",
    "--trace",
    "--co",
    "--collect-only",
    "-k",
    "--lf",
    "--last-failed",
)
"""Options after which ``test`` runs pytest as asked, in one process: the developer chose the workers,
needs a debugger, or picked a few tests (starting workers, each collecting the suite, would cost more)."""

USAGE = """usage: python3 tasks.py COMMAND [ARGS...]

  demo [ARGS...]   chat with the bot in this terminal (runs: yibao chat ARGS...)
  test [ARGS...]   ruff, ruff format --check, mypy, lint-imports, then pytest ARGS...
                   (on several processes unless ARGS choose otherwise: see pytest_args)
"""


def _fail(message: str, code: int = 1) -> int:
    print(f"tasks.py: {message}", file=sys.stderr)
    return code


def _run(*argv: str | Path) -> int:
    return subprocess.run([str(arg) for arg in argv], cwd=ROOT, check=False).returncode  # noqa: S603


def _wanted_stamp(extras: frozenset[str]) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return f"{digest} {','.join(sorted(extras))}"


def _installed_extras(wanted_digest: str) -> frozenset[str] | None:
    """The extras of the last install if it was of this pyproject.toml, else None."""
    try:
        digest, _, extras = STAMP.read_text().strip().partition(" ")
    except OSError:
        return None
    return frozenset(filter(None, extras.split(","))) if digest == wanted_digest else None


def bootstrap(extras: frozenset[str] = frozenset()) -> int:
    """Make sure .venv exists and holds the project with ``extras``; 0 when it does."""
    if not (BIN / "python").exists() or not (BIN / "pip").exists():
        if importlib.util.find_spec("venv") is None or importlib.util.find_spec("ensurepip") is None:
            return _fail("this Python cannot create a venv; install it: sudo apt-get install python3-venv")
        print(f"==> creating {VENV.name}", flush=True)
        if _run(sys.executable, "-m", "venv", VENV) != 0:
            return _fail("python3 -m venv failed; on Debian/Ubuntu: sudo apt-get install python3-venv")
        STAMP.unlink(missing_ok=True)
    digest = _wanted_stamp(frozenset()).split(" ")[0]
    installed = _installed_extras(digest)
    if installed is not None and extras <= installed:
        return 0
    extras |= installed or frozenset()
    target = f".[{','.join(sorted(extras))}]" if extras else "."
    print(f"==> pip install -e {target}", flush=True)
    code = _run(BIN / "python", "-m", "pip", "install", *PIP_QUIET, "-e", target)
    if code != 0:
        return _fail("pip install failed", code)
    STAMP.write_text(_wanted_stamp(extras) + "\n")
    return 0


def demo(args: list[str]) -> int:
    code = bootstrap()
    if code != 0:
        return code
    yibao = BIN / "yibao"
    if not yibao.exists():
        return _fail(f"{yibao} is missing; delete {STAMP} and try again")
    os.execv(yibao, [str(yibao), "chat", *args])  # noqa: S606 - replaces this process on purpose


def workers() -> int:
    """Twice the cores, at most ``MAX_WORKERS``: the tests mostly wait (on Redis, processes they
    started, HTTP on loopback), so a 2-core machine keeps 4 of them busy."""
    return max(2, min(MAX_WORKERS, 2 * (os.cpu_count() or 1)))


def _one_process(args: list[str]) -> bool:
    for arg in args:
        name = arg.split("=", 1)[0]
        if name in _ONE_PROCESS or arg in ("no:xdist", "-pno:xdist") or "::" in arg:
            return True
        if name[:2] in ("-n", "-k") and not name.startswith("--"):  # -n4, -kbind
            return True
    return False


def pytest_args(args: list[str]) -> list[str]:
    """``args``, after ``-n <workers> --dist worksteal`` (pytest-xdist) unless they pick the workers
    (``-n``, ``--dist``, ``-p no:xdist``), a debugger (``--pdb``, ``--trace``), only collecting
    (``--co``) or a few tests (``-k``, ``--lf``, a ``file::test`` id): those run in this one process,
    as typed, since each worker collects the whole suite first. ``worksteal``: a worker that is done
    takes half of what a busy one still has queued, so the long end-to-end tests, which come first,
    do not pile up on one worker."""
    if _one_process(args):
        return args
    return ["-n", str(workers()), "--dist", "worksteal", *args]


def test(args: list[str]) -> int:
    code = bootstrap(frozenset({"test"}))
    if code != 0:
        return code
    steps: list[tuple[str, list[str]]] = [
        ("ruff check", ["ruff", "check", "."]),
        ("ruff format --check", ["ruff", "format", "--check", "."]),
        ("mypy", ["mypy", "dialogs", "bot", "platforms"]),
        ("lint-imports", ["lint-imports"]),
        ("pytest", ["pytest", *pytest_args(args)]),
    ]
    for name, (tool, *tool_args) in steps:
        print(f"==> {name}", flush=True)
        code = _run(BIN / tool, *tool_args)
        if name == "pytest" and code == 5:
            return _fail("pytest collected no tests")
        if code != 0:
            return _fail(f"{name} failed (exit {code})", code)
    return 0


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 11):  # noqa: UP036 - runs on whatever python3 a fresh machine has
        return _fail("Python 3.11 or newer is needed")
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command == "demo":
        return demo(args)
    if command == "test":
        return test(args)
    print(USAGE, end="")
    return 0 if command in {"", "-h", "--help", "help"} else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
