"""The restricted unpickler: loads DCRNN's adj_mx.pkl, refuses anything that could run code."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from stmgt.data.loaders.safe_pickle import safe_load
from stmgt.errors import DataError


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.shared_data
def test_real_metr_la_adj_pickle(los_loop):
    ids, to_ind, adj = safe_load(los_loop / "metr_la_graph" / "adj_mx.pkl")
    assert len(ids) == 207 and ids[0] == "773869"
    assert to_ind[ids[5]] == 5
    assert adj.shape == (207, 207) and adj.dtype == np.float32
    assert int((adj != 0).sum()) == 1722 and np.allclose(np.diag(adj), 1.0)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_numpy_round_trip(tmp_path, protocol):
    obj = [["a", "b"], {"a": 0, "b": 1}, np.arange(6, dtype=np.float32).reshape(2, 3), np.float64(2.5)]
    f = tmp_path / "ok.pkl"
    f.write_bytes(pickle.dumps(obj, protocol=protocol))
    ids, d, a, s = safe_load(f)
    assert ids == ["a", "b"] and d == {"a": 0, "b": 1} and s == 2.5
    np.testing.assert_array_equal(a, obj[2])


def test_malicious_pickle_is_refused(tmp_path):
    f = tmp_path / "evil.pkl"
    f.write_bytes(pickle.dumps([["a"], {}, _Evil()], protocol=2))
    with pytest.raises(DataError, match=r"refuses to load global (posix|os|nt)\.system"):
        safe_load(f)


def test_other_globals_and_object_arrays_are_refused(tmp_path):
    for obj in (pickle.dumps(print), pickle.dumps(np.array([{"x": 1}], dtype=object), protocol=2)):
        with pytest.raises(DataError) as e:
            safe_load(obj)
        assert "\n" not in str(e.value)
    # _codecs.encode("abc", "zlib"): the codec global is allowed, but only for latin-1
    codec = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x04\x00\x00\x00zlib\x86R."
    with pytest.raises(DataError, match="only latin-1"):
        safe_load(codec)


def test_not_a_pickle(tmp_path):
    f = tmp_path / "x.pkl"
    f.write_text("hello")
    with pytest.raises(DataError, match="not a readable pickle"):
        safe_load(f)
    with pytest.raises(DataError, match="no such pickle"):
        safe_load(tmp_path / "missing.pkl")


# hand-made pickles (protocol 0 opcodes): a few bytes that ask for object arrays or huge allocations
_R = b"cnumpy.core.multiarray\n_reconstruct\n"
_ND = b"cnumpy\nndarray\n"


def _tup(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _int(n: int) -> bytes:
    return b"I" + str(n).encode() + b"\n"


def _str(x: str) -> bytes:
    return b"S'" + x.encode() + b"'\n"


@pytest.mark.parametrize("data, msg", [
    (_R + _tup(_ND, _tup(_int(2), _int(2)), _str("O")) + b"R.", "object array"),
    (_ND + _tup(_tup(_int(3),), _str("O")) + b"R.", "object array"),
    (_R + _tup(_ND, _tup(_int(100_000), _int(100_000)), _str("f8")) + b"R.",
     r"10,000,000,000 elements, above the limit of 100,000,000"),
    (_ND + _tup(_tup(_int(100_000), _int(100_000)), _str("f8")) + b"R.", "above the limit"),
    (_R + _tup(_ND, _tup(_int(-1),), _str("f8")) + b"R.", "invalid shape"),
    (_R + _tup(b"cnumpy\ndtype\n", _tup(_int(1),), _str("f8")) + b"R.", "other than numpy.ndarray"),
], ids=["reconstruct-O", "ndarray-O", "reconstruct-huge", "ndarray-huge", "negative", "subtype"])
def test_crafted_pickles_are_refused_before_allocation(tmp_path, data, msg):
    assert len(data) < 120
    f = tmp_path / "adj_mx.pkl"
    f.write_bytes(data)
    with pytest.raises(DataError, match=msg) as e:
        safe_load(f)
    assert "\n" not in str(e.value) and str(e.value).startswith(str(f))


@pytest.mark.parametrize("adj", ["hello", ["a", "b"], np.array([["x", "y"], ["z", "w"]]), [[1, 2], [3]], {"a": 1}])
def test_adjacency_that_is_not_numbers(tmp_path, adj):
    from stmgt.data.loaders.metr import read_adj_pickle

    f = tmp_path / "adj_mx.pkl"
    f.write_bytes(pickle.dumps([["a", "b"], {"a": 0, "b": 1}, adj], protocol=2))
    with pytest.raises(DataError, match=r"adj_mx.pkl: adj_mx must be a numeric square matrix") as e:
        read_adj_pickle(f)
    assert "\n" not in str(e.value) and "np." not in str(e.value)
