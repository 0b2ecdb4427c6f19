"""The kernel sandbox around each agent process (Landlock), and who it runs as.

An agent is driven by a model that anything it reads can steer, and in the
embedded mode it is a process of the scheduler's own machine and often of its
own OS user. Landlock (Linux 5.13+, scoping from ABI 6) lets a process give up
access for itself and its children, with no privilege needed, so each agent is
started through a tiny launcher (``python -I -m sympozium_schedule.runtime.sandbox
POLICY -- COMMAND...``) that restricts itself and then ``exec``s the command.
The launcher keeps the parent free of ``preexec_fn`` (unsafe in a process with
threads, and the store has a writer thread).

What an agent may touch (see docs/agents.md, "Isolation"):

- read and execute: system paths (``/usr``, ``/bin``, ``/lib*``), a short list of
  ``/etc`` files that programs need (not ``/etc`` itself: ``/etc/shadow`` is
  readable by root), the Python installation and this package's source, the
  agent command's own folder, and what the operator allows with a flag;
- read and write: the run's own ``work``, ``tmp`` and ``ipc`` folders, and
  ``/dev/null``;
- nothing else: not the data directory (store, Secrets, NATS files, other
  runs' folders), not ``/proc`` beyond the agent's own process;
- no signals to, and no abstract-socket connections to, processes outside its
  own sandbox (the scheduler, other agents);
- no capabilities: the bounding set is emptied, so even an agent of a root
  ``run`` execs without any (no kernel modules, raw sockets, mounts).

TCP is not restricted (an agent calls its model's API); Landlock cannot filter
by address, only by port.

The Landlock system calls go through ``py-landlock`` (handled-access sets per
ABI version, typed flags); this module only chooses the paths.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_READ = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What common programs read in /etc; /etc as a whole also holds shadow and ssh keys.
ETC_READ = (
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/timezone",
    "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts", "/etc/host.conf",
    "/etc/resolv.conf", "/etc/gai.conf", "/etc/services", "/etc/protocols", "/etc/ssl",
    "/etc/ca-certificates", "/etc/pki", "/etc/alternatives", "/etc/mime.types", "/etc/os-release",
    "/etc/locale.alias", "/etc/python3", "/etc/debian_version",
)
DEVICES_READ = ("/dev/zero", "/dev/urandom", "/dev/random", "/dev/full")
DEVICES_WRITE = ("/dev/null",)
LAUNCHER = "sympozium_schedule.runtime.sandbox"


class SandboxError(Exception):
    """A policy that cannot be built (an allowed path that reaches the data directory)."""


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; 0 when Landlock is missing or disabled."""
    try:
        from py_landlock import get_abi_version
    except ImportError:  # pragma: no cover - a platform py-landlock does not install on
        return 0
    try:
        return int(get_abi_version())
    except Exception:
        return 0


def _prefixes() -> list[Path]:
    """Where the interpreter lives: agents in Python (the demo and LLM agents) need it."""
    return [Path(p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                              os.path.dirname(sys.executable)} if p]


def _python_paths() -> list[Path]:
    """The interpreter and every importable location of this installation: the
    prefixes and the entries of sys.path (site-packages, an editable install's
    source), but not the current directory, which ``-m`` puts first."""
    found = {str(p) for p in _prefixes()}
    cwd = os.getcwd()
    for entry in sys.path:
        if entry and os.path.abspath(entry) != cwd:
            found.add(entry)
    return [Path(p) for p in sorted(found) if p]


def _contains(outer: Path, inner: Path) -> bool:
    return inner == outer or outer in inner.parents


def command_paths(command: Sequence[str], path_env: str) -> list[Path]:
    """The agent command's own location: its executable and its folder, and every
    argument that names an existing file (``python /opt/agent/main.py``) and its
    folder. (A folder that holds the data directory is dropped by the policy; the
    file itself is still allowed.)"""
    import shutil

    out: list[Path] = []
    exe = shutil.which(command[0], path=path_env) if command else None
    if exe:
        out += [Path(exe).resolve(), Path(exe).resolve().parent, Path(exe).parent.resolve()]
    for arg in command[1:]:
        if arg.startswith("-"):
            continue
        candidate = Path(arg)
        if candidate.is_absolute() and candidate.is_file():
            out += [candidate.resolve(), candidate.resolve().parent]
    return out


@dataclass(frozen=True, slots=True)
class Sandbox:
    """How agents are confined; built once by ``run`` and checked against the data
    directory there, so a bad flag is one error at start, not a failed run later."""

    data_dir: Path
    allow_read: tuple[Path, ...] = ()   # operator's extra read+execute paths
    allow_write: tuple[Path, ...] = ()  # operator's extra read+write paths
    system: tuple[Path, ...] = field(default_factory=lambda: tuple(
        Path(p) for p in (*SYSTEM_READ, *ETC_READ)))

    def __post_init__(self) -> None:
        data = self.data_dir.resolve()
        for flag, paths in (("--agent-allow", self.allow_read),
                            ("--agent-allow-write", self.allow_write)):
            for path in paths:
                resolved = path.resolve()
                if _contains(resolved, data) or _contains(data, resolved):
                    raise SandboxError(
                        f"{flag}: {str(path)!r}: reaches the data directory {data} (the store, "
                        "Secrets and every run's folder), which agents must never read")
        # sys.path entries that reach it are only left out of the policy; the prefixes
        # themselves are what every Python agent needs.
        for path in _prefixes():
            resolved = path.resolve()
            if _contains(resolved, data):
                raise SandboxError(
                    f"the data directory {data} is inside {resolved}, which agents must read "
                    "(the Python installation): choose a --data-dir outside it")

    def policy(self, *, read_write: Iterable[Path], command: Sequence[str],
               path_env: str) -> dict[str, list[str]]:
        """The launcher's policy for one run: absolute paths by access. Paths that
        reach the data directory are dropped, except the run's own folders."""
        data = self.data_dir.resolve()
        read = [*self.system, *_python_paths(), *command_paths(command, path_env), *self.allow_read]
        keep = []
        for path in read:
            resolved = path.resolve() if path.exists() else None
            if resolved is None or _contains(resolved, data) or _contains(data, resolved):
                continue
            keep.append(str(resolved))
        return {
            "read": sorted(set(keep)),
            "read_write": sorted({str(p.resolve()) for p in (*read_write, *self.allow_write)}),
            "devices_read": [p for p in DEVICES_READ if os.path.exists(p)],
            "devices_write": [p for p in DEVICES_WRITE if os.path.exists(p)],
        }

    def wrap(self, command: Sequence[str], policy: dict[str, list[str]]) -> tuple[str, ...]:
        """The command line that starts ``command`` inside ``policy``."""
        return (sys.executable, "-I", "-m", LAUNCHER, json.dumps(policy, separators=(",", ":")),
                "--", *command)


# --- the launcher (runs in the child, before the agent) ---------------------------------------

PR_CAPBSET_DROP = 24  # <linux/prctl.h>


def drop_capabilities() -> int:
    """Empty the capability bounding set, so the agent, even started as root, execs
    with no capabilities (no module loading, raw sockets, or bypassing file modes).
    Returns how many were dropped (0 for an unprivileged process, which has none)."""
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    dropped = 0
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
            dropped += 1
            continue
        if ctypes.get_errno() in (errno.EINVAL, errno.EPERM):  # past the last one; or unprivileged
            break
    return dropped


def apply(policy: dict[str, list[str]]) -> None:
    """Restrict this process (and everything it will exec or fork) to ``policy``."""
    from py_landlock import AccessFs, Landlock

    file_read = AccessFs.READ_FILE | AccessFs.EXECUTE
    dir_read = file_read | AccessFs.READ_DIR
    file_write = AccessFs.READ_FILE | AccessFs.WRITE_FILE | AccessFs.TRUNCATE
    dir_write = (dir_read | AccessFs.WRITE_FILE | AccessFs.TRUNCATE | AccessFs.MAKE_REG
                 | AccessFs.MAKE_DIR | AccessFs.MAKE_SYM | AccessFs.MAKE_FIFO | AccessFs.MAKE_SOCK
                 | AccessFs.REMOVE_FILE | AccessFs.REMOVE_DIR | AccessFs.REFER)
    # best effort (strict=False): an older kernel drops the access rights it does not
    # know (REFER before ABI 2, scoping before ABI 6) instead of refusing to start.
    ruleset = Landlock(strict=False).allow_all_network()

    def add(paths: Iterable[str], for_dir: AccessFs, for_file: AccessFs) -> None:
        for text in paths:
            if os.path.isdir(text):
                ruleset.add_path_rule(text, access=for_dir)
            elif os.path.exists(text):
                ruleset.add_path_rule(text, access=for_file)

    add(policy.get("read", []), dir_read, file_read)
    add(policy.get("read_write", []), dir_write, file_write)
    add(policy.get("devices_read", []), AccessFs.READ_FILE, AccessFs.READ_FILE)
    add(policy.get("devices_write", []), file_write, file_write)
    # The agent's own /proc entry (Python and shells look at /proc/self); opened
    # now, it names this process, which exec keeps.
    add([f"/proc/{os.getpid()}"], AccessFs.READ_FILE | AccessFs.READ_DIR, AccessFs.READ_FILE)
    drop_capabilities()
    ruleset.apply()


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: python -m sympozium_schedule.runtime.sandbox POLICY -- COMMAND...\n")
        return 2
    try:
        apply(json.loads(argv[0]))
    except Exception as exc:
        sys.stderr.write(f"sandbox: cannot restrict the agent ({type(exc).__name__}: {exc})\n")
        return 126
    command = argv[2:]
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"sandbox: cannot start {command[0]!r}: {exc.strerror or exc}\n")
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
