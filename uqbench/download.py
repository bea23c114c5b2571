"""Fetching official data files and telling official files from look-alikes.

A :class:`Resource` is one published file: where it comes from, its published MD5, and where it
lands under the data root (a plain file, or an archive whose top folder is unpacked there).
:func:`fetch` streams it to a temporary name, checks the checksum, and only then renames it into
place, so an interrupted or corrupted download never leaves a file that looks complete; archives
are unpacked into a temporary folder that is renamed into place as a whole.

:func:`provenance` is what a run records about its data files: ``official`` when a file's MD5 is
the published one, ``not the official file (md5 ...)`` when it is not (a subset, a re-encoded
copy, a test fixture: it still loads), and ``no published checksum`` when nobody publishes one
for that file. ``UQBENCH_DATA_MIRROR`` (a URL prefix) replaces every source's folder, for a
local mirror laid out like the data root (archives under their own names).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from uqbench.errors import ConfigError, DataError
from uqbench.run_folder import check_writable_folder, remove_dead_scratch, scratch_path

CHUNK = 1 << 20


@dataclass(frozen=True)
class Resource:
    """One published file.

    Attributes:
        url: the official source.
        md5: its published MD5 (hex), or ``None`` where none is published.
        target: where it lands, relative to the data root: the file itself, or for an archive
            (``unpack=True``) the folder the archive's top folder becomes.
        unpack: the file is a tar (any compression) or zip archive with one top-level folder.
        flat: the archive has no top folder: its members are the target folder's contents.
        sha256: the published SHA-256, where that is what the source publishes.
    """

    url: str
    md5: str | None
    target: str
    unpack: bool = False
    flat: bool = False
    sha256: str | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1].split("?", 1)[0]

    def source(self) -> str:
        """The URL to fetch: the official one, or under ``UQBENCH_DATA_MIRROR`` the file at its
        data-root path (an archive under its own name)."""
        mirror = os.environ.get("UQBENCH_DATA_MIRROR")
        if not mirror:
            return self.url
        return f"{mirror.rstrip('/')}/{self.filename if self.unpack else self.target}"


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of ``path``'s bytes by ``algorithm`` (``md5``, ``sha256``), read in chunks."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def md5sum(path: Path) -> str:
    return file_digest(path, "md5")


def _download(url: str, dest: Path, published: dict[str, str], timeout: float) -> None:
    """Stream ``url`` to ``dest`` through a temporary name; the published checksums
    (algorithm -> hex) are checked before the rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_scratch(list(dest.parent.glob(f".{dest.name}.partial@*@*")))
    partial = scratch_path(dest.parent, f"{dest.name}.partial")
    digests = {name: hashlib.new(name, usedforsecurity=False) for name in published}
    try:
        try:
            with (
                urllib.request.urlopen(url, timeout=timeout) as response,
                open(partial, "wb") as out,
            ):
                expected = response.headers.get("Content-Length")
                received = 0
                while chunk := response.read(CHUNK):
                    for digest in digests.values():
                        digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
            # A connection closed early ends the stream quietly: the length tells.
            if expected is not None and received != int(expected):
                raise OSError(f"connection closed after {received:,} of {int(expected):,} bytes")
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise DataError(
                f"downloading {url} failed ({exc}); check the network, or fetch the file by hand "
                f"into {dest.parent}"
            ) from None
        for name, expected in published.items():
            actual = digests[name].hexdigest()
            if actual != expected:
                raise DataError(
                    f"the download of {url} has {name.upper()} {actual}, not the published "
                    f"{expected}: it was cut short or is another file; nothing was kept. Retry, "
                    f"or fetch it by hand into {dest.parent}"
                )
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


def _check_member(name: str, plain: bool) -> None:
    """An archive member lands inside the unpacking folder and is a plain file or folder: an
    absolute path, a ``..`` step, a link, a device or a FIFO is refused (the official archives
    hold none)."""
    parts = Path(name).parts
    if Path(name).is_absolute() or ".." in parts or name.startswith(("/", "\\")):
        raise tarfile.TarError(f"member {name!r} points outside the archive's folder")
    if not plain:
        raise tarfile.TarError(f"member {name!r} is a link or a special file")


def _unpack(archive: Path, root: Path, target: str, url: str, flat: bool) -> None:
    """Unpack ``archive`` into a temporary folder under ``root``, then rename its single top
    folder (``flat``: the temporary folder itself) to ``root / target``: the target appears
    whole or not at all."""
    remove_dead_scratch(list(root.glob(".*.unpack@*@*")))
    scratch = scratch_path(root, f"{target.replace('/', '_')}.unpack")
    try:
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zipped:
                    for info in zipped.infolist():
                        is_link = stat.S_ISLNK(info.external_attr >> 16)
                        _check_member(info.filename, info.is_dir() or not is_link)
                    zipped.extractall(scratch)
            else:
                with tarfile.open(archive) as tar:
                    for member in tar.getmembers():
                        _check_member(member.name, member.isfile() or member.isdir())
                    tar.extractall(scratch, filter="data")
        except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
            raise DataError(
                f"{url} is not a readable archive ({exc}); nothing was kept. It is not the "
                f"official file: fetch it by hand and unpack it into {root}"
            ) from None
        tops = list(scratch.iterdir())
        if not flat and (len(tops) != 1 or not tops[0].is_dir()):
            raise DataError(f"{url} does not hold one top folder; it is not the official file")
        destination = root / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.exists():  # another process finished first: keep theirs
            return
        os.replace(scratch if flat else tops[0], destination)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def fetch(resource: Resource, root: Path, timeout: float = 60.0) -> Path:
    """Download (and unpack) ``resource`` under ``root``; returns where it landed."""
    root = Path(root)
    try:
        check_writable_folder(root, "data.root")
    except ConfigError as exc:
        raise DataError(f"data.download=true cannot save {resource.filename}: {exc}") from None
    published = {k: v for k, v in (("md5", resource.md5), ("sha256", resource.sha256)) if v}
    if not resource.unpack:
        dest = root / resource.target
        _download(resource.source(), dest, published, timeout)
        return dest
    remove_dead_scratch(list(root.glob(f".{resource.filename}.download@*@*")))
    archive = scratch_path(root, f"{resource.filename}.download")
    try:
        _download(resource.source(), archive, published, timeout)
        _unpack(archive, root, resource.target, resource.source(), resource.flat)
    finally:
        archive.unlink(missing_ok=True)
    return root / resource.target


def provenance(path: Path, md5: str | None, sha256: str | None = None) -> str:
    """What a run records about one data file (see the module docstring): checked against its
    published MD5, else against the known SHA-256 of its official content."""
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected is None:
            continue
        actual = file_digest(path, algorithm)
        if actual == expected:
            return "official"
        label = "published" if algorithm == "md5" else "official"
        return f"not the official file ({algorithm} {actual}, {label} {expected})"
    return "no published checksum"
