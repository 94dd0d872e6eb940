"""The Python side of docs/reliability.md: non-finite input never gives a finite answer (forward,
backward, train_step, evaluate, jacobian), errors are typed by their runtime code, saves are
atomic, the stop flag, and no nanobind leak report at exit. (The Layer's non-CPU path goes
through torch devices, which know no cuda-emu: the same rule on cuda-emu is checked in C++,
tests/unit/test_reliability_nonfinite.cpp.)"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

molt = pytest.importorskip("molt")
from conftest import random_params  # noqa: E402

NAN, INF = np.float32(np.nan), np.float32(np.inf)


def make(fixture_bundle, name="tiny-molt", batch=6):
    layer = molt.Layer(fixture_bundle(name), batch=batch)
    layer.load_state_dict(random_params(layer, 3))
    return layer


def rows(n, d, seed=0):
    return np.random.default_rng(seed).normal(0, 2, (n, d)).astype(np.float32)


def poisoned(x):
    bad = x.copy()
    bad[1, 2] = NAN
    bad[3, 0] = INF
    bad[4, -1] = -INF
    bad[5, :] = NAN  # with every gate closed the kernels alone would answer exactly dec_b
    return bad


@pytest.mark.parametrize("name", ["tiny-molt", "tiny-transcoder", "tiny-transcoder-topk"])
def test_forward_over_non_finite_rows_is_non_finite_there(fixture_bundle, name):
    layer = make(fixture_bundle, name)
    x = rows(6, layer.d_model)
    clean = np.array(layer.forward(x))
    assert np.isfinite(clean).all()
    got = np.array(layer.forward(poisoned(x)))
    for r in (1, 3, 4, 5):
        assert not np.isfinite(got[r]).any(), f"row {r}: {got[r]}"
    np.testing.assert_array_equal(got[[0, 2]], clean[[0, 2]])


@pytest.mark.parametrize("which", ["x", "y"])
@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_train_step_with_non_finite_x_or_y_is_skipped(fixture_bundle, which, value):
    layer = make(fixture_bundle)
    x, y = rows(6, 8, 1), rows(6, 8, 2)
    (x if which == "x" else y)[2, 3] = value
    before = layer.state_dict(optimizer=True)
    m = layer.train_step(x, y)
    assert m["skipped"] is True
    assert not np.isfinite(m["loss"])
    after = layer.state_dict(optimizer=True)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    assert layer.step == 1 and layer.adam_step == 0
    m = layer.train_step(rows(6, 8, 1), rows(6, 8, 2))  # a finite batch still trains
    assert m["skipped"] is False and layer.adam_step == 1


def test_backward_evaluate_and_jacobian_over_non_finite_rows(fixture_bundle):
    layer = make(fixture_bundle)
    x = rows(6, 8)
    bad = poisoned(x)
    g = layer.backward(bad, np.ones((6, 8), np.float32))
    for r in (1, 3, 4, 5):
        assert not np.isfinite(g["x"][r]).any()
    assert np.isfinite(g["x"][0]).all()
    for p in layer.param_names:  # every param's gradient sums over the rows
        assert not np.isfinite(np.asarray(g[p])).all(), p
    assert not np.isfinite(layer.evaluate(bad, rows(6, 8, 1))["nmse"])
    y = rows(6, 8, 1)
    y[0, 0] = NAN
    assert not np.isfinite(layer.evaluate(x, y)["nmse"])
    J = layer.jacobian(bad)
    assert not np.isfinite(J[1]).any() and np.isfinite(J[0]).all()


def test_errors_carry_their_code(fixture_bundle, tmp_path):
    with pytest.raises(molt.NotFound, match="no such spec"):
        molt.Layer(str(tmp_path / "nope"))
    assert issubclass(molt.NotFound, molt.MoltError) and issubclass(molt.NotFound, LookupError)
    with pytest.raises(molt.InvalidArgument, match="unknown device"):
        molt.Layer(fixture_bundle("tiny-molt"), device="tpu")
    assert issubclass(molt.InvalidArgument, ValueError)
    layer = make(fixture_bundle)
    with pytest.raises(molt.InvalidArgument, match="shape"):
        layer.load_state_dict({"enc_w": np.zeros((3, 3), np.float32)}, strict=False)
    bad = tmp_path / "torn.safetensors"
    bad.write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"x\"")
    with pytest.raises(molt.DataLoss):
        molt.load_tensors(str(bad))
    with pytest.raises(molt.NotFound):
        molt.load_tensors(str(tmp_path / "absent.safetensors"))
    for cls in (molt.InvalidArgument, molt.NotFound, molt.DataLoss, molt.Unavailable,
                molt.InternalError, molt.IoError, molt.Cancelled):
        assert issubclass(cls, molt.MoltError) and issubclass(cls, RuntimeError)


def test_saves_are_atomic(fixture_bundle, tmp_path):
    layer = make(fixture_bundle)
    path = tmp_path / "state.safetensors"
    layer.save(path)
    first = path.read_bytes()
    # A save that fails (the target is a directory) leaves nothing behind and raises by code.
    target = tmp_path / "a-directory"
    target.mkdir()
    with pytest.raises(molt.MoltError):
        layer.save(target)
    assert sorted(os.listdir(tmp_path)) == ["a-directory", "state.safetensors"]
    assert os.listdir(target) == []
    layer.load_state_dict(random_params(layer, 9))
    layer.save(path)  # replaced whole: the new state loads, no temporary remains
    assert path.read_bytes() != first
    assert sorted(os.listdir(tmp_path)) == ["a-directory", "state.safetensors"]
    again = make(fixture_bundle)
    again.load_state_dict(str(path))
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[k], v)


def test_stop_flag_is_shared_with_the_trainer():
    molt.clear_stop()
    assert not molt.stop_requested()
    molt.request_stop()
    assert molt.stop_requested()
    molt.clear_stop()
    assert not molt.stop_requested()


def test_signals_set_the_stop_flag_inside_stop_on_signals():
    import signal
    molt.clear_stop()
    with molt.stop_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        assert molt.stop_requested()
    molt.clear_stop()


LEAK_SCRIPT = """
import ctypes, sys
import numpy as np
import molt
layer = molt.Layer(sys.argv[1], batch=4)
layer.forward(np.zeros((4, 8), np.float32))
# An extra reference nobody will drop, as an autograd graph alive at exit holds its Layer.
ctypes.pythonapi.Py_IncRef(ctypes.py_object(layer))
if sys.argv[2] == "unreleased":
    molt._live_layers.discard(layer)  # the control: without the exit hook nanobind reports it
"""


@pytest.mark.parametrize("mode", ["released", "unreleased"])
def test_no_leak_report_at_exit_while_a_layer_is_still_referenced(fixture_bundle, mode):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(LEAK_SCRIPT),
                        fixture_bundle("tiny-molt"), mode],
                       capture_output=True, text=True, env=env, cwd=os.path.dirname(__file__))
    assert r.returncode == 0, r.stderr
    if mode == "released":
        assert "leaked" not in r.stderr, r.stderr
    else:
        assert "leaked" in r.stderr, "the control no longer leaks: the test proves nothing"
