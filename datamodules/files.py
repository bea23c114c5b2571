"""Where data files live and how the array files every datamodule shares are read and checked.

Data files are untrusted input: ``.npy`` files are read with ``allow_pickle=False`` and pickle
files (CIFAR's batches) with :func:`load_pickle`, which builds nothing but plain data. A file
that cannot be what it claims (an unreadable ``.npy``, labels out of range, a label count
that disagrees with its images) raises :class:`~uqbench.errors.DataError` naming the file; it is
never returned as data.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from uqbench.errors import DataError


def data_root(root: str | None) -> Path:
    """``root``, else ``$UQBENCH_DATA``, else ``~/.cache/uqbench/data``."""
    return Path(root or os.environ.get("UQBENCH_DATA") or Path.home() / ".cache/uqbench/data")


def load_npy(path: Path, mmap: bool) -> np.ndarray:
    """The array in ``path`` (memory-mapped read-only when ``mmap``); never unpickles."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable array is corrupt
        raise DataError(f"{path} is corrupt ({type(exc).__name__}: {exc}); replace it") from None


def check_labels(path: Path, labels: np.ndarray, count: int, classes: int) -> None:
    """``labels`` are ``count`` integers in ``[0, classes)``, else ``path`` is named corrupt."""
    if len(labels) != count:
        raise DataError(
            f"{path}: {count:,} images but {len(labels):,} labels; corrupt or mismatched"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path} is corrupt: labels are {labels.dtype}, not integers")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(f"{path} is corrupt: labels outside 0-{classes - 1}")


# What the official CIFAR pickles (and NumPy's own pickles of such arrays) are made of: plain
# containers, and arrays of fixed-size numeric dtypes. Nothing else is ever constructed.
class _Refused(pickle.UnpicklingError):
    """A pickle that refers to something plain data files never hold."""


_PLAIN = (dict, list, tuple, bytes, str, int, float, bool, type(None))
_ARRAY_KINDS = "biuf"  # bool, signed and unsigned integers, floats: never objects


def _checked_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.kind not in _ARRAY_KINDS or dtype.hasobject or dtype.fields:
        raise _Refused(f"dtype {dtype} is not a plain numeric dtype")
    return dtype


def _checked_reconstruct(cls: Any, *args: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise _Refused(f"an array of class {cls!r}")
    return _RECONSTRUCT(cls, *args)


def _checked_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    return _FROMBUFFER(bytes(buffer), _checked_dtype(dtype), shape, order)


def _latin1(text: str, encoding: str = "utf-8") -> bytes:
    # How protocol-2 pickles written by Python 3 carry bytes: _codecs.encode(text, "latin1").
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Refused(f"_codecs.encode with {encoding!r}")
    return text.encode("latin1")


_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy's _reconstruct, wherever it lives
_FROMBUFFER = np.ndarray.__reduce_ex__(np.zeros(1), 5)[0]  # numpy's _frombuffer (protocol 5)
_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _checked_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _checked_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _checked_frombuffer,
    ("_codecs", "encode"): _latin1,
}


class _PlainDataUnpickler(pickle.Unpickler):
    """Resolves only the globals in ``_ALLOWED``; any other (``os.system``, ``builtins.eval``,
    a class with ``__reduce__``) is refused before it is called."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"it refers to {module}.{name}") from None


def _check_plain(value: Any) -> None:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _ARRAY_KINDS or value.dtype.hasobject:
            raise _Refused(f"an array of dtype {value.dtype}")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key)
            _check_plain(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_plain(item)
    elif not isinstance(value, _PLAIN):
        raise _Refused(f"a {type(value).__name__}")


def load_pickle(path: Path) -> Any:
    """The plain data in pickle file ``path``: dicts, lists, tuples, bytes, str, numbers and
    NumPy arrays of numeric dtypes, as the official CIFAR batches hold.

    Raises:
        DataError: naming ``path``, for an unreadable file or one that refers to anything else
            (a pickle that would run code is refused before anything in it is called).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        value = _PlainDataUnpickler(io.BytesIO(data), encoding="bytes").load()
        _check_plain(value)
    except _Refused as exc:
        raise DataError(
            f"{path} is not a plain data file ({exc}): data files may hold only dicts, lists, "
            "bytes, str, numbers and numeric arrays; replace it with the official file"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any unreadable pickle is corrupt
        raise DataError(f"{path} is corrupt ({type(exc).__name__}: {exc}); replace it") from None
    return value
