"""Safe file handling for every tool: one folder walker and atomic writes.

:func:`walk` lists the image files under a folder the same way for restore's job list,
evaluate's folder pairing, the training folder sources and ``make_testset``:

- each real folder is visited once, even through symlinks (loops are cut by the folder's
  ``(st_dev, st_ino)``);
- FIFOs, sockets and devices are never opened, broken links and folders that cannot be listed
  are reported (``Walk.skipped``: ``(path, reason)``) instead of failing the walk;
- folders given in ``exclude`` (an output tree inside the input tree) and folders holding the
  :data:`OUTPUT_MARKER` that the tools leave in their output folders are not entered, so outputs
  of earlier runs are never read back as inputs.

Writers never leave a half-written file under the final name: :func:`atomic_write_bytes` and
:func:`atomic_open` write a temporary file in the same folder and ``os.replace`` it into place
(images are encoded in memory first: :func:`adacode_jax.images.write_image_raw`,
:func:`adacode_jax.images.write_png`). :func:`join_suffix` names outputs (``name_x4``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
import tempfile
from typing import IO, Callable, Iterable, Iterator

# Left by restore (and other tools) in each folder they write into: the walker does not enter
# such a folder when it is below the folder being walked.
OUTPUT_MARKER = ".adacode_jax_output"

# Image formats a user may expect to be picked up that the tools do not read (reported once).
UNSUPPORTED_IMAGE_EXTENSIONS = (".gif", ".heic", ".heif", ".avif", ".jxl")


@dataclasses.dataclass
class Walk:
    """What :func:`walk` found: image files (sorted) and what it skipped, with the reason."""
    files: list[str] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def messages(self) -> list[str]:
        """One ``<path>: skipped, <reason>`` line per skipped entry."""
        return [f"{p}: skipped, {reason}" for p, reason in self.skipped]


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def walk(root: str | os.PathLike, extensions: Iterable[str], *,
         exclude: Iterable[str | os.PathLike] = (),
         exclude_file: Callable[[str], bool] | None = None) -> Walk:
    """Image files under ``root`` (recursive, symlinks followed, sorted).

    Args:
      root: the folder to walk.
      extensions: lower-case file endings to pick up (``".png"``, ...). Hidden files
        (``.name``) are never picked up.
      exclude: folders not to enter (compared by device and inode, so any spelling works).
      exclude_file: a predicate on a file's path; True drops the file silently (e.g. outputs
        written next to their inputs with a suffix).

    Raises:
      FileNotFoundError / NotADirectoryError: ``root`` is not a folder.
    """
    root = os.fspath(root)
    extensions = tuple(e.lower() for e in extensions)
    st = os.stat(root)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(20, "not a folder", root)
    excluded = set()
    for d in exclude:
        try:
            s = os.stat(d)
            excluded.add((s.st_dev, s.st_ino))
        except OSError:
            pass
    out = Walk()
    seen = {(st.st_dev, st.st_ino)}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            out.skipped.append((folder, f"cannot list the folder ({e.strerror or e})"))
            continue
        subfolders = []
        for entry in entries:
            path = entry.path
            try:
                st = os.stat(path)      # follows links; lstat would not see a link's target
            except OSError as e:
                if entry.is_symlink():
                    out.skipped.append((path, "a broken symbolic link"))
                else:
                    out.skipped.append((path, f"cannot read ({e.strerror or e})"))
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in excluded:
                    continue
                if key in seen:
                    out.skipped.append((path, "a folder already visited (symbolic link loop or "
                                              "second link to the same folder)"))
                    continue
                seen.add(key)
                if os.path.lexists(os.path.join(path, OUTPUT_MARKER)):
                    out.skipped.append((path, f"an output folder of an earlier run (holds "
                                              f"{OUTPUT_MARKER})"))
                    continue
                subfolders.append(path)
                continue
            name = entry.name.lower()
            if name.startswith("."):
                continue
            if name.endswith(UNSUPPORTED_IMAGE_EXTENSIONS):
                out.skipped.append((path, f"{os.path.splitext(name)[1]} images are not supported "
                                          "(convert to PNG)"))
                continue
            if not name.endswith(extensions):
                continue
            if not stat.S_ISREG(st.st_mode):
                out.skipped.append((path, f"{_kind(st.st_mode)}, not an image file"))
                continue
            if exclude_file is not None and exclude_file(path):
                continue
            out.files.append(path)
        stack.extend(reversed(subfolders))
    out.files.sort()
    return out


def mark_output_folder(folder: str | os.PathLike) -> None:
    """Leaves :data:`OUTPUT_MARKER` in ``folder`` (created) so walks from above skip it."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    marker = os.path.join(folder, OUTPUT_MARKER)
    if not os.path.lexists(marker):
        atomic_write_bytes(marker, b"written by adacode_jax; folders holding this file are not "
                                   b"read as inputs\n")


def join_suffix(stem: str, suffix: str) -> str:
    """An output name's stem: ``stem`` + ``suffix`` with ``_`` between them unless the suffix
    starts with a separator (``a`` + ``x4`` -> ``a_x4``, ``a`` + ``-x4`` -> ``a-x4``)."""
    if not suffix:
        return stem
    return stem + (suffix if suffix[0] in "_-. " else "_" + suffix)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same existing file or folder."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or below it (real paths; the path need not exist)."""
    p, f = os.path.realpath(path), os.path.realpath(folder)
    return p == f or p.startswith(f.rstrip(os.sep) + os.sep)


# ---- atomic writes --------------------------------------------------------------------------

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _temporary(path: str, mode: str, **kwargs) -> Iterator[IO]:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())     # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> str:
    """Writes ``data`` to ``path`` through a temporary file in the same folder; returns the path.

    A reader sees the old file or the complete new one, never a part; on an error (disk full)
    the temporary file is removed and ``path`` is untouched.
    """
    path = os.fspath(path)
    with _temporary(path, "wb") as f:
        f.write(data)
    return path


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8",
                newline: str | None = None) -> Iterator[IO]:
    """``with atomic_open(path) as f: f.write(...)``: a text (``"w"``) or binary (``"wb"``)
    file that appears under ``path`` only when the block ends without an error."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', got {mode!r}")
    kwargs = {} if mode == "wb" else {"encoding": encoding, "newline": newline}
    with _temporary(os.fspath(path), mode, **kwargs) as f:
        yield f
