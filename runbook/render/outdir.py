"""A local output directory that is safe to write into (`inv render --out`).

The operator's own machine is at stake: `--out /` once wrote `/etc/haproxy/haproxy.cfg` there.
So the directory must be the operator's own (not `/`, not a system or home directory itself),
empty unless `force`, and everything below it is created and opened relative to it with
``O_NOFOLLOW`` (a symlink planted inside is never followed), each file written atomically
(temp file, fsync, rename); a new directory appears whole or not at all. Every refusal is
an ``OutDirError`` with the reason.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Trees nothing may be rendered into (resolved paths; /bin, /lib are /usr/... on Debian 12).
SYSTEM_TREES = (
    "/proc", "/sys", "/dev", "/run", "/boot", "/efi", "/etc", "/usr", "/bin", "/sbin", "/lib",
    "/lib32", "/lib64", "/libx32", "/snap", "/var/lib", "/var/log", "/var/cache", "/var/spool",
    "/var/mail", "/var/backups", "/var/run", "/var/lock",
)  # fmt: skip
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class OutDirError(Exception):
    """The output directory or a path in it cannot be used (bad input, exit 2)."""


@dataclass(frozen=True)
class OutFile:
    """A file to write: ``path`` relative to the output directory (no '..'), content, mode."""

    path: str
    content: bytes
    mode: int


def system_reason(real: str) -> str | None:
    """Why the resolved directory ``real`` must not be written into, or None if it may."""
    if real == "/":
        return "is the root directory"
    for tree in SYSTEM_TREES:
        if real == tree:
            return "is a system directory"
        if real.startswith(tree + "/"):
            return f"is inside the system directory {tree}"
    if os.path.dirname(real) == "/":
        return f"is a top-level system directory ({real}); use a directory inside it"
    homes = {os.path.realpath(p.pw_dir) for p in pwd.getpwall() if p.pw_dir not in ("", "/")}
    homes.add(os.path.realpath(os.path.expanduser("~")))
    if real in homes:
        return "is a home directory itself; use a directory inside it"
    return None


def write_tree(out: str | os.PathLike[str], files: Iterable[OutFile], *, force: bool) -> Path:
    """Check OUT, then write every file below it; returns OUT's resolved path.

    A new OUT appears whole: it is built in a temporary sibling and renamed into place, so a
    refusal half-way leaves nothing. Into an existing OUT (empty, or with ``force``) each file
    is written atomically.
    """
    out = os.fspath(out)
    real, exists = check(out, force=force)
    if exists:
        write_files(real, files)
        return real
    try:
        os.makedirs(real.parent, mode=0o755, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{real.name}.rb-tmp-", dir=real.parent))
    except OSError as exc:
        raise OutDirError(f"{out}: cannot create: {exc.strerror or exc}") from None
    try:
        tmp.chmod(0o755)
        write_files(tmp, files)
        try:
            os.rename(tmp, real)
        except OSError as exc:
            raise OutDirError(f"{out}: cannot create: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return real


def check(out: str, *, force: bool) -> tuple[Path, bool]:
    """OUT's resolved path and whether it exists, or OutDirError with the reason."""
    if not out.strip():
        raise OutDirError("must not be empty (e.g. --out rendered)")
    real = os.path.realpath(os.path.abspath(os.path.expanduser(out)))
    reason = system_reason(real)
    if reason:
        shown = out if out == real else f"{out} ({real})"
        raise OutDirError(f"{shown} {reason}")
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        return Path(real), False
    except OSError as exc:
        raise OutDirError(f"{out}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise OutDirError(f"{out} exists and is not a directory")
    try:
        entries = os.listdir(real)
    except OSError as exc:
        raise OutDirError(f"{out}: cannot list: {exc.strerror or exc}") from None
    if entries and not force:
        raise OutDirError(
            f"{out} is not empty ({len(entries)} entries); use --force to write into it "
            "(files of the same name are replaced)"
        )
    return Path(real), True


def write_files(root: Path, files: Iterable[OutFile]) -> None:
    """Write every file below ``root`` without following any symlink below it."""
    try:
        root_fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise OutDirError(f"{root}: {exc.strerror or exc}") from None
    try:
        for f in files:
            _write_one(root_fd, f)
    finally:
        os.close(root_fd)


def _parts(path: str) -> list[str]:
    parts = [p for p in path.strip("/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise OutDirError(f"{path}: not a path below the output directory")
    return parts


def _write_one(root_fd: int, f: OutFile) -> None:
    *dirs, name = _parts(f.path)
    fds: list[int] = []
    dir_fd, where = root_fd, ""
    try:
        for part in dirs:
            where = f"{where}/{part}" if where else part
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=dir_fd)
            dir_fd = _open_dir(part, dir_fd, where)
            fds.append(dir_fd)
        _atomic_write(dir_fd, name, f, f"{where}/{name}" if where else name)
    except OSError as exc:
        raise OutDirError(f"{f.path.lstrip('/')}: {exc.strerror or exc}") from None
    finally:
        for fd in fds:
            os.close(fd)


def _open_dir(name: str, dir_fd: int, where: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        st = os.lstat(name, dir_fd=dir_fd)
        if stat.S_ISLNK(st.st_mode):
            raise OutDirError(f"{where} is a symbolic link; refusing to follow it") from None
        if not stat.S_ISDIR(st.st_mode):
            raise OutDirError(f"{where} exists and is not a directory") from None
        raise OutDirError(f"{where}: {exc.strerror or exc}") from None


def _atomic_write(dir_fd: int, name: str, f: OutFile, where: str) -> None:
    """Temp file beside the target (created exclusively, mode from the first byte), renamed
    over it: a reader never sees half a file, and a symlink at ``name`` is replaced, not
    followed."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutDirError(f"{where} exists and is a directory")
    tmp = f".{name}.rb-tmp-{os.getpid()}"
    fd = os.open(
        tmp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        f.mode & 0o777,
        dir_fd=dir_fd,
    )
    try:
        try:
            os.fchmod(fd, f.mode & 0o7777)  # the umask must not change the rendered mode
            view = memoryview(f.content)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
