"""A restricted unpickler for the adjacency pickles of DCRNN-style datasets (METR-LA, PEMS-BAY).

``adj_mx.pkl`` (Li et al., ICLR 2018, https://github.com/liyaguang/DCRNN ``data/sensor_graph/``) is a
Python-2 pickle of ``[sensor_ids: list[str], sensor_id_to_ind: dict[str, int], adj_mx: ndarray]``.
Unpickling calls whatever callables the file names, so a plain :func:`pickle.load` of a file from
the internet can run arbitrary code. :class:`RestrictedUnpickler` resolves only the few globals a
numpy array needs to be rebuilt and refuses every other one with a one-line
:class:`~stmgt.errors.DataError`:

* ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``,
  ``numpy.dtype``, ``numpy.core.multiarray.scalar`` and ``numpy.core.numeric._frombuffer`` (protocol 5),
  with their ``numpy._core`` spellings;
* ``_codecs.encode``, which Python 3 writes for ``bytes`` in protocol-2 pickles, restricted to the
  latin-1 codec (any other codec is refused).

Lists, dicts, strings, numbers and tuples need no global and load as usual. Object arrays are
refused (``allow_pickle``-style) however they are asked for (a ``numpy.dtype('O')`` global, or the
``'O'`` type code given straight to ``_reconstruct`` or ``ndarray``), so nothing but plain data comes
out. An array may hold at most :data:`MAX_ELEMENTS` elements (a 10,000 x 10,000 adjacency); the
shape is checked before anything is allocated, so a tiny pickle cannot ask for gigabytes.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from stmgt.errors import DataError

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

#: The most elements an array in a pickle may have (checked before allocation).
MAX_ELEMENTS = 100_000_000

_LATIN1 = {"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"}


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` limited to the latin-1 codec (how protocol 2 stores ``bytes``)."""
    if str(encoding).lower() not in _LATIN1 or not isinstance(obj, str):
        raise DataError(f"pickle asks for codec {encoding!r}; only latin-1 byte strings are allowed")
    return codecs.encode(obj, "latin1", errors)


def _dtype(*args: Any) -> np.dtype:
    try:
        dt = np.dtype(*args)
    except (TypeError, ValueError) as e:
        raise DataError(f"pickle asks for an invalid numpy dtype ({type(e).__name__})") from None
    if dt.hasobject:
        raise DataError("pickle contains an object array; only numeric arrays are allowed")
    return dt


def _checked(shape: Any, dtype: Any) -> tuple[tuple[int, ...], np.dtype]:
    """A plain shape within :data:`MAX_ELEMENTS` and a non-object dtype, or a DataError."""
    dt = _dtype(dtype)  # (refuses object dtypes, np.dtype instances included)
    dims = shape if isinstance(shape, tuple | list) else (shape,)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise DataError(f"pickle asks for an array of invalid shape {dims!r}")
    n = 1
    for d in dims:
        n *= d
    if n > MAX_ELEMENTS:
        raise DataError(
            f"pickle asks for an array of {n:,} elements, above the limit of {MAX_ELEMENTS:,}; it is not an"
            " adjacency matrix stmgt can use"
        )
    return tuple(dims), dt


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """``numpy...multiarray._reconstruct`` for plain ndarrays of a bounded size and a numeric dtype."""
    if subtype is not _ndarray:
        raise DataError("pickle rebuilds an array of a type other than numpy.ndarray; only plain arrays are allowed")
    _checked(shape, dtype)
    return _multiarray._reconstruct(np.ndarray, shape, dtype)


def _ndarray(shape: Any, dtype: Any = float, *args: Any, **kwargs: Any) -> np.ndarray:
    """``numpy.ndarray(shape, dtype)`` checked like :func:`_reconstruct` (no buffer arguments)."""
    if args or kwargs:
        raise DataError("pickle calls numpy.ndarray with a buffer; only plain arrays are allowed")
    dims, dt = _checked(shape, dtype)
    return np.ndarray(dims, dt)


def _scalar(dtype: np.dtype, *args: Any) -> Any:
    if dtype.hasobject:
        raise DataError("pickle contains a Python-object numpy scalar; only numeric scalars are allowed")
    return _multiarray.scalar(dtype, *args)


def _frombuffer(buf: Any, dtype: np.dtype, shape: Any, order: str) -> np.ndarray:
    _checked(shape, dtype)
    return _numeric._frombuffer(buf, dtype, shape, order)


#: ``(module, name)`` pairs the unpickler resolves, and what they resolve to.
ALLOWED: dict[tuple[str, str], Any] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    ALLOWED[(_mod, "_reconstruct")] = _reconstruct
    ALLOWED[(_mod, "scalar")] = _scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    ALLOWED[(_mod, "_frombuffer")] = _frombuffer  # protocol-5 arrays
ALLOWED[("numpy", "ndarray")] = _ndarray  # also the subtype argument of _reconstruct
ALLOWED[("numpy", "dtype")] = _dtype
ALLOWED[("_codecs", "encode")] = _latin1_encode


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and plain containers, and nothing else."""

    source = "pickle"

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - documented in the module
        obj = ALLOWED.get((module, name))
        if obj is None:
            raise DataError(
                f"{self.source}: refuses to load global {module}.{name}; only numpy arrays, lists, dicts"
                " and strings are allowed (the file may be malicious or not an adjacency pickle)"
            )
        return obj


def safe_load(path: str | Path | bytes, *, encoding: str = "latin1") -> Any:
    """Load a pickle file (or bytes) with :class:`RestrictedUnpickler`.

    Raises:
        DataError: the file is missing, not a pickle, or names a global that is not allowed.
    """
    if isinstance(path, bytes | bytearray):
        data, label = bytes(path), "pickle"
    else:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"{p}: no such pickle file")
        data, label = p.read_bytes(), str(p)
    up = RestrictedUnpickler(io.BytesIO(data), encoding=encoding)
    up.source = label
    try:
        return up.load()
    except DataError as e:
        if str(e).startswith(label):
            raise
        raise DataError(f"{label}: {e}") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise DataError(f"{label}: not a readable pickle ({type(e).__name__}: {e})") from None
