"""molt.harvest.Harvester: hook plumbing, shard contents and sink blocks, without torch (a
duck-typed module stands in for torch.nn.Module's forward-hook API)."""
import os

import numpy as np
import pytest

molt = pytest.importorskip("molt")
from molt.harvest import Harvester  # noqa: E402


class FakeModule:
    """register_forward_hook / remove, and a forward that calls the hooks like torch does."""

    def __init__(self, w):
        self.w, self.hooks = w, []

    def register_forward_hook(self, fn):
        module = self

        class Handle:
            def remove(self):
                module.hooks.remove(fn)

        self.hooks.append(fn)
        return Handle()

    def __call__(self, x):
        y = x @ self.w
        for h in list(self.hooks):
            h(self, (x,), y)
        return y


def test_shards_hold_every_row_in_order(tmp_path):
    rng = np.random.default_rng(0)
    mod = FakeModule(rng.normal(size=(6, 6)).astype(np.float32))
    xs = [rng.normal(size=(2, 5, 6)).astype(np.float32) for _ in range(5)]  # [batch, seq, d]
    out = str(tmp_path / "acts")
    with Harvester(mod, out_dir=out, shard_rows=16) as h:
        for x in xs:
            mod(x)
    assert not mod.hooks  # the hook is removed on close
    files = sorted(os.listdir(out))
    assert files == [f"shard_{i:05d}.safetensors" for i in range(4)]  # 50 rows: 16+16+16+2
    x_all = np.concatenate([x.reshape(-1, 6) for x in xs])
    got = [molt.load_tensors(os.path.join(out, f)) for f in files]
    np.testing.assert_array_equal(np.concatenate([g["x"] for g in got]), x_all)
    np.testing.assert_allclose(np.concatenate([g["y"] for g in got]), x_all @ mod.w, rtol=1e-6)
    assert h.rows == 50 and h.shards == 4


def test_sink_gets_exact_blocks_and_max_rows(tmp_path):
    mod = FakeModule(np.eye(4, dtype=np.float32))
    blocks = []
    h = Harvester(mod, sink=lambda x, y: blocks.append((x.copy(), y.copy())), rows=8, max_rows=20)
    for i in range(6):
        mod(np.full((5, 4), i, np.float32))
    h.close()
    assert [len(b[0]) for b in blocks] == [8, 8]  # 20 rows taken; the tail of 4 is not a block
    assert h.rows == 20
    np.testing.assert_array_equal(blocks[1][0][:, 0], [1, 1, 2, 2, 2, 2, 2, 3])


def test_refuses_to_mix_runs(tmp_path):
    mod = FakeModule(np.eye(3, dtype=np.float32))
    with Harvester(mod, out_dir=str(tmp_path), shard_rows=4):
        mod(np.ones((4, 3), np.float32))
    with pytest.raises(FileExistsError):
        Harvester(mod, out_dir=str(tmp_path))


def test_harvest_then_train(tmp_path):
    """Rows straight from a hook into a MOLT's training steps."""
    fixtures = os.path.join(os.path.dirname(__file__), "..", "fixtures", "tiny-molt")
    layer = molt.Layer(fixtures, batch=32, lr=1e-2, steps=100)
    rng = np.random.default_rng(1)
    mod = FakeModule(rng.normal(0, 0.3, (8, 8)).astype(np.float32))
    metrics = []
    with Harvester(mod, sink=lambda x, y: metrics.append(layer.train_step(x, y)), rows=32):
        for _ in range(100):
            mod(rng.normal(size=(32, 8)).astype(np.float32))
    assert len(metrics) == 100 and layer.step == 100
    assert metrics[-1]["mse"] < 0.6 * metrics[0]["mse"]
