"""Fetch dataset files over HTTP(S) (or file://) atomically, with a progress bar on stderr.

A download that fails halfway must never leave a truncated file where the loader will find it, so
bytes go to a temporary file in the destination folder and are moved into place with os.replace.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from workbench.core.errors import InputError

CHUNK = 1 << 16
TIMEOUT_S = 60


def download_file(
    url: str, dest: str | os.PathLike[str], *, opener: Callable = urllib.request.urlopen
) -> Path:
    """Download ``url`` to ``dest`` (atomically); raise InputError if anything goes wrong."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create folder {dest.parent} for download: {exc}") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = opener(url, timeout=TIMEOUT_S)
            except TypeError:  # an opener without a timeout argument
                response = opener(url)
            with response:
                total = _content_length(response)
                progress = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    console=Console(stderr=True),
                    transient=True,
                )
                with progress:
                    task = progress.add_task(f"downloading {dest.name}", total=total)
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        progress.advance(task, len(chunk))
        os.replace(tmp, dest)
    except InputError:
        raise
    except (OSError, ValueError) as exc:  # URLError is an OSError; ValueError for malformed URLs
        raise InputError(f"download of {url} failed: {exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _content_length(response) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def safe_extract_tar(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Extract a tar archive, refusing absolute paths, '..', links and device files (path traversal)."""
    dest = Path(dest)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                parts = PurePosixPath(member.name).parts
                if member.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise InputError(f"refusing to extract {archive}: unsafe member path {member.name!r}")
                if not (member.isfile() or member.isdir()):
                    raise InputError(
                        f"refusing to extract {archive}: member {member.name!r} is not a plain file"
                    )
            try:
                tar.extractall(dest, members=members, filter="data")
            except TypeError:  # Python without extraction filters; members were checked above
                tar.extractall(dest, members=members)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"cannot extract {archive}: {exc}") from None
