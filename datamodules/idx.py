"""Reading the IDX files of MNIST and Fashion-MNIST (LeCun's format), checked as they are read.

An IDX file is a big-endian header (two zero bytes, a type code, the number of dimensions, then
each dimension as an int32) followed by the data. ``.gz`` copies are read as well. A file that
cannot be what its name says (bad magic, wrong dimensions, truncated) raises
:class:`~uqbench.errors.DataError` naming the file, never returns data.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from uqbench.errors import DataError

UBYTE = 0x08


def find(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists (the extracted file first)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path, dims: int) -> np.ndarray:
    """The uint8 array of an IDX file with ``dims`` dimensions (3: images, 1: labels)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path} is corrupt ({type(exc).__name__}: {exc}); replace it") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != UBYTE or raw[3] != dims:
        raise DataError(
            f"{path} is corrupt: not an IDX file of unsigned bytes with {dims} dimension(s) "
            f"(header {raw[:4].hex() or 'empty'}); replace it with the official file"
        )
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"{path} is corrupt: truncated header; replace it")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"{path} is corrupt: its header promises {expected:,} bytes of data for shape "
            f"{shape}, the file holds {len(raw) - header:,} (truncated or padded); replace it"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
