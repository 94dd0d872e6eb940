"""molt.load_tensors reads every tensor of a safetensors file: floats as float32 (F64 as
float64), integers and BOOL as their own NumPy type; a dtype it cannot represent is an error
naming the tensor, never a silent omission (it used to drop every non-float tensor, so a
harvest shard's seq / pos / token columns and a checkpoint's train.last_active vanished)."""
import json
import struct

import numpy as np
import pytest

molt = pytest.importorskip("molt")

_SPELLING = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64",
             np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
             np.dtype(np.int8): "I8", np.dtype(np.uint64): "U64", np.dtype(np.uint32): "U32",
             np.dtype(np.uint16): "U16", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL"}


def write(path, tensors, raw=None):
    """A safetensors file written by hand (the format, not another library): tensors are NumPy
    arrays; raw maps name -> (dtype spelling, shape, bytes) for dtypes NumPy lacks."""
    header, blobs, at = {}, [], 0
    items = [(k, _SPELLING[v.dtype], list(v.shape), np.ascontiguousarray(v).tobytes())
             for k, v in tensors.items()] + [(k, *r) for k, r in (raw or {}).items()]
    for name, dtype, shape, blob in items:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + len(blob)]}
        blobs.append(blob)
        at += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return str(path)


def test_integer_and_bool_tensors_load_with_their_own_dtype(tmp_path):
    rng = np.random.default_rng(0)
    want = {"x": rng.normal(size=(4, 3)).astype(np.float32),
            "seq": np.array([0, 0, 1, 1], np.int32),
            "pos": np.array([5, 6, 0, 1], np.int64),
            "token": np.array([[1, 2], [3, 40000]], np.uint16),
            "big": np.array([2**40 + 3, -(2**35)], np.int64),
            "u8": np.array([0, 255], np.uint8), "i8": np.array([-128, 127], np.int8),
            "u32": np.array([2**32 - 1], np.uint32), "i16": np.array([-300], np.int16),
            "u64": np.array([2**63 + 5], np.uint64), "f64": np.array([1 + 2**-40], np.float64),
            "mask": np.array([True, False, True]), "empty": np.zeros((0, 2), np.int64)}
    got = molt.load_tensors(write(tmp_path / "t.safetensors", want))
    assert set(got) == set(want)
    for name, value in want.items():
        a = np.asarray(got[name])
        assert a.dtype == value.dtype, name
        assert a.shape == value.shape, name
        np.testing.assert_array_equal(a, value, err_msg=name)


def test_a_checkpoint_keeps_its_integer_tensor(tmp_path):
    # what molt-train writes beside the params: train.last_active is I64
    path = write(tmp_path / "c.safetensors",
                 {"w": np.ones((2, 2), np.float32), "train.last_active": np.array([7, -1], np.int64)})
    got = molt.load_tensors(path)
    assert np.asarray(got["train.last_active"]).tolist() == [7, -1]


def test_an_unloadable_dtype_is_an_error_naming_the_tensor(tmp_path):
    path = write(tmp_path / "f8.safetensors", {"ok": np.zeros(2, np.float32)},
                 raw={"scales": ("F8_E4M3", [2], b"\x01\x02")})
    with pytest.raises(molt.InvalidArgument, match=r"tensor 'scales' has dtype F8_E4M3"):
        molt.load_tensors(path)
