"""Output folders a job may replace: only one that is new, empty, or carries the marker a job left there.

A mistyped ``--out`` (``make demo OUT=.``, a data folder, a home directory) must stop the job with a message
naming the folder, never wipe it. Each job that rebuilds a folder calls :func:`replace_output_dir` (local paths)
or :func:`check_replaceable` with the folder's listing (any file system, e.g. Hadoop's), and leaves
:data:`MARKER` in the folder it made, so its next run may replace it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

MARKER = ".flowsentinel-output"


class OutputFolderError(RuntimeError):
    """The folder exists, is not empty and was not made by a FlowSentinel job; the message names it."""


def check_replaceable(folder: str | Path, entries: Iterable[str] | None, markers: Iterable[str] = (MARKER,)) -> None:
    """Raise OutputFolderError unless `folder` (whose entry names are `entries`, None if it does not exist) may be
    deleted: it does not exist, is empty, or holds one of `markers`."""
    if entries is None:
        return
    names = set(entries)
    if not names or names & set(markers):
        return
    shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
    raise OutputFolderError(
        f"output folder {folder} is not empty and was not written by FlowSentinel (no {' or '.join(markers)} "
        f"in it; it holds {shown}): refusing to replace it. Name a new or empty folder, or remove it yourself")


def replace_output_dir(folder: str | Path, job: str, markers: Iterable[str] = (MARKER,)) -> Path:
    """Delete `folder` if :func:`check_replaceable` allows it, create it empty with the marker; returns it."""
    path = Path(folder).resolve()
    check_replaceable(path, local_entries(path), markers)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    write_marker(path, job)
    return path


def local_entries(folder: str | Path) -> list[str] | None:
    """Entry names of a local folder (a file lists itself, so it is never replaced); None if nothing is there."""
    path = Path(folder)
    if path.is_dir():
        return [p.name for p in path.iterdir()]
    return [path.name] if path.exists() or path.is_symlink() else None


def write_marker(folder: str | Path, job: str) -> None:
    (Path(folder) / MARKER).write_text(f"written by {job}; this folder is replaced by the next run\n")
