"""Data-parallel molt on torch.distributed (docs/distributed.md), CPU and gloo, under torchrun:
2 ranks equal 1 process on the same global batch, a SIGKILLed 2-rank run resumes to the same
weights, and Layer.train_step all-reduces under a process group."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

molt = pytest.importorskip("molt")
pytest.importorskip("torch.distributed")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUNDLE = os.path.join(ROOT, "tests", "fixtures", "tiny-molt")  # d = 8, 5 transforms
STEPS = 50


def _env():
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(molt.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root, HERE, env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", "2", *args]


def _train_args(data, out, *extra):
    return ["--data", data, "--out", out, "--steps", str(STEPS), "--batch", "64",
            "--lr", "3e-3", "--seed", "5", "--log-every", "10", "--checkpoint-every", "10",
            "--quiet", *extra]


def _run(cmd, timeout=120):
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Rows of a fixed random MLP (seeded): 3,200 rows, so 50 steps of 64 see each once."""
    rng = np.random.default_rng(11)
    x = rng.normal(0, 1, (3200, 8)).astype(np.float32)
    w1, w2 = rng.normal(0, 0.6, (8, 24)), rng.normal(0, 0.4, (24, 8))
    y = (np.tanh(x @ w1) @ w2).astype(np.float32)
    path = str(tmp_path_factory.mktemp("data") / "train.safetensors")
    molt.save_tensors(path, {"x": x, "y": y})
    return path


@pytest.fixture(scope="module")
def one_and_two(data, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    one, two = str(base / "one"), str(base / "two")
    _run([sys.executable, "-m", "molt.train", BUNDLE, *_train_args(data, one)])
    _run(_torchrun("-m", "molt.train", BUNDLE, *_train_args(data, two)))
    return one, two


def _params(run):
    return {k: np.asarray(v, np.float64) for k, v in
            molt.load_tensors(os.path.join(run, "checkpoint.safetensors")).items()}


def _rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def test_two_gloo_ranks_equal_one_process(one_and_two):
    one, two = one_and_two
    p1, p2 = _params(one), _params(two)
    layer = molt.Layer(BUNDLE, batch=8, seed=5)  # the runs' initialisation
    assert set(layer.param_names) <= set(p1)
    init = layer.state_dict()
    for name in layer.param_names:
        assert _rel(p2[name], p1[name]) < 1e-5, name
    # the runs did train: the params moved far beyond the tolerance
    assert max(_rel(p1[n], np.asarray(init[n], np.float64)) for n in layer.param_names) > 0.05
    # and log the same global-batch metrics
    lines1 = open(os.path.join(one, "metrics.jsonl")).read().splitlines()
    lines2 = open(os.path.join(two, "metrics.jsonl")).read().splitlines()
    assert len(lines1) == len(lines2) == STEPS // 10
    import json
    for a, b in zip(lines1, lines2):
        a, b = json.loads(a), json.loads(b)
        assert a["tokens"] == b["tokens"]
        assert abs(a["loss"] - b["loss"]) <= 1e-5 * abs(a["loss"])
        assert abs(a["l0"] - b["l0"]) <= 1e-6 + 1e-5 * a["l0"]


def test_sigkilled_two_rank_run_resumes_to_the_same_weights(data, one_and_two, tmp_path):
    _, two = one_and_two
    run = str(tmp_path / "killed")
    ckpt = os.path.join(run, "checkpoint.safetensors")
    worker = os.path.join(HERE, "dist_worker.py")
    p = subprocess.Popen(_torchrun(worker, "slow-train", BUNDLE, *_train_args(data, run)),
                         env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    deadline = time.time() + 90
    while not os.path.exists(ckpt) and p.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    assert os.path.exists(ckpt), p.stderr.read().decode()[-2000:] if p.poll() else "timeout"
    time.sleep(0.05)  # a few steps past the checkpoint, which are lost
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(run, "weights.safetensors"))  # it did not finish
    _run(_torchrun("-m", "molt.train", BUNDLE, *_train_args(data, run, "--resume")))
    resumed, straight = _params(run), _params(two)
    for name in molt.Layer(BUNDLE, batch=8).param_names:
        np.testing.assert_array_equal(resumed[name], straight[name], err_msg=name)


def test_layer_train_step_all_reduces_under_a_process_group(data, tmp_path):
    out = str(tmp_path / "layer.safetensors")
    _run(_torchrun(os.path.join(HERE, "dist_worker.py"), "layer", BUNDLE, data, out, "8"))
    t = molt.load_tensors(data)
    ref = molt.Layer(BUNDLE, batch=64, seed=3, steps=8)
    for s in range(8):
        m = ref.train_step(t["x"][s * 64:(s + 1) * 64], t["y"][s * 64:(s + 1) * 64])
    got = molt.load_tensors(out)
    for name, want in ref.state_dict().items():
        assert _rel(np.asarray(got[name], np.float64), np.asarray(want, np.float64)) < 1e-5, name
    assert abs(float(open(out + ".loss").read()) - m["loss"]) <= 1e-5 * abs(m["loss"])


def test_batch_must_divide_by_the_world_size(data, tmp_path):
    # Refused before the rendezvous (which would wait for the other ranks), so one process
    # with torchrun's environment shows it.
    env = dict(_env(), WORLD_SIZE="2", RANK="0")
    r = subprocess.run([sys.executable, "-m", "molt.train", BUNDLE,
                        *_train_args(data, str(tmp_path / "odd")), "--batch", "63"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr == "molt.train: error: --batch 63 does not divide by the world size 2\n"
    assert not os.path.exists(tmp_path / "odd")
