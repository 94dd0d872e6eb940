"""molt.lm on a tiny random-weight Llama (no download): the SwiGLU teacher tensors reproduce the
MLP, and the spliced evaluation is exact at its fixed points (the MLP itself recovers all of the
loss, a zero or mean replacement none of it) and its KL is the one computed by hand."""
import numpy as np
import pytest

from conftest import required  # noqa: E402

torch = required("torch")  # scripts/bootstrap installs both: CI fails rather than skips
transformers = required("transformers")

from molt import lm  # noqa: E402


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48,
                                   num_hidden_layers=3, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 97, (5, 12), generator=torch.Generator().manual_seed(1))
    return model, ids


def test_swiglu_teacher_tensors_reproduce_the_mlp(tiny_llama):
    model, _ = tiny_llama
    mlp = lm.mlp_of(model, 1)
    t, meta = lm.swiglu_teacher_tensors(mlp)
    assert meta == {"activation": "swiglu"}
    assert t["w_gate"].shape == (48, 32) and t["w_down"].shape == (32, 48)
    x = np.random.default_rng(2).standard_normal((7, 32))
    g, u = x @ t["w_gate"].T.astype(np.float64), x @ t["w_up"].T.astype(np.float64)
    want = (g / (1 + np.exp(-g)) * u) @ t["w_down"].T.astype(np.float64)
    with torch.no_grad():
        got = mlp(torch.tensor(x, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_mlp_of_rejects_a_layer_out_of_range(tiny_llama):
    with pytest.raises(ValueError, match="3 layers"):
        lm.mlp_of(tiny_llama[0], 3)


def test_spliced_metrics_fixed_points(tiny_llama):
    model, ids = tiny_llama
    mlp = lm.mlp_of(model, 1)
    exact = lm.spliced_metrics(model, 1, ids, replacement=lambda x: mlp(x), batch=2)
    assert exact["tokens"] == 5 * 11
    assert exact["ce_spliced"] == pytest.approx(exact["ce_clean"], abs=1e-9)
    assert exact["kl"] == pytest.approx(0.0, abs=1e-9)
    assert exact["recovered_vs_mean"] == pytest.approx(1.0, abs=1e-6)
    assert exact["recovered_vs_zero"] == pytest.approx(1.0, abs=1e-6)
    zero = lm.spliced_metrics(model, 1, ids, replacement=lambda x: torch.zeros_like(x))
    assert zero["ce_spliced"] == pytest.approx(zero["ce_zero"], abs=1e-9)
    assert zero["recovered_vs_zero"] == pytest.approx(0.0, abs=1e-6)
    # Mean ablation with the mean computed by the clean pass.
    with torch.no_grad():
        ys = []
        h = mlp.register_forward_hook(lambda m, i, o: ys.append(o.reshape(-1, o.shape[-1])))
        model(ids)
        h.remove()
        mean = torch.cat(ys).double().mean(0)
    meanrep = lm.spliced_metrics(model, 1, ids, replacement=lambda x: mean.float().expand(*x.shape[:-1], 32))
    assert meanrep["recovered_vs_mean"] == pytest.approx(0.0, abs=1e-6)
    assert meanrep["ce_mean"] == pytest.approx(zero["ce_mean"], abs=1e-9)


def test_spliced_kl_matches_a_direct_computation(tiny_llama):
    model, ids = tiny_llama
    mlp = lm.mlp_of(model, 2)
    noisy = lambda x: mlp(x) * 0.7
    m = lm.spliced_metrics(model, 2, ids, replacement=noisy)
    with torch.no_grad():
        clean = torch.log_softmax(model(ids).logits[:, :-1].double(), -1)
        h = mlp.register_forward_hook(lambda mod, i, o: o * 0.7)
        spliced = torch.log_softmax(model(ids).logits[:, :-1].double(), -1)
        h.remove()
    kl = (clean.exp() * (clean - spliced)).sum(-1).mean().item()
    assert m["kl"] == pytest.approx(kl, rel=1e-9)
    assert m["kl"] > 0
    assert m["ce_spliced"] != pytest.approx(m["ce_clean"], abs=1e-6)


def test_evaluator_runs_the_tail_exactly_and_shares_the_baselines(tiny_llama):
    """The evaluator runs the model only from the layer on; its clean loss is the whole
    model's, and many replacements in one call give what one call each gives."""
    model, ids = tiny_llama
    mlp = lm.mlp_of(model, 2)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[:, :-1].double(), -1)
        ce = -logp.gather(-1, ids[:, 1:].unsqueeze(-1)).mean().item()
    reps = {"half": lambda x: mlp(x) * 0.5, "twice": lambda x: mlp(x) * 2}
    both = lm.SplicedEvaluator(model, 2, ids, batch=3).evaluate(reps)
    for name, fn in reps.items():
        one = lm.spliced_metrics(model, 2, ids, replacement=fn, batch=2)
        assert both[name]["ce_clean"] == pytest.approx(ce, rel=1e-12)
        for k, v in one.items():
            assert both[name][k] == pytest.approx(v, rel=1e-9, abs=1e-12), (name, k)
    assert both["half"]["ce_spliced"] != pytest.approx(both["twice"]["ce_spliced"], abs=1e-9)


def test_spliced_metrics_refuses_a_wrong_shape(tiny_llama):
    model, ids = tiny_llama
    with pytest.raises(ValueError, match="replacement returned shape"):
        lm.spliced_metrics(model, 0, ids, replacement=lambda x: x[..., :5])


def _save_tiny_lm(folder):
    """A tiny random Llama and a word-level tokenizer, saved as transformers would."""
    from conftest import save_tiny_llama

    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "."]
    save_tiny_llama(folder, words, hidden=16, intermediate=24, seed=3)
    return words


def test_molt_harvest_smollm2_path_on_a_tiny_saved_llama(tmp_path):
    import os
    import subprocess
    import sys
    from safetensors.numpy import load_file

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    words = _save_tiny_lm(tmp_path / "lm")
    text = tmp_path / "text.txt"
    rng = np.random.default_rng(4)
    text.write_text("\n\n".join(" ".join(rng.choice(words, 30)) for _ in range(12)))
    out = tmp_path / "h"
    cmd = [sys.executable, os.path.join(root, "tools", "molt-harvest", "molt-harvest"),
           "--model", "smollm2", "--model-dir", str(tmp_path / "lm"), "--layer", "1",
           "--text", str(text), "--tokens", "200", "--seq-len", "10", "--out", str(out),
           "--shard-size", "64", "--val-fraction", "0.2"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    teacher = load_file(str(out / "teacher.safetensors"))
    assert set(teacher) == {"w_gate", "w_up", "w_down"}
    seqs = load_file(str(out / "sequences.safetensors"))
    ids, val = seqs["ids"], seqs["val"]
    assert ids.shape == (20, 10) and val.sum() == 4
    rows = 0
    for sub, want_val in (("train", 0), ("val", 1)):
        for f in sorted(os.listdir(out / sub)):
            s = load_file(str(out / sub / f))
            assert s["x"].dtype == np.float32 and s["seq"].dtype == np.int32
            # Every row names its context: the token at (seq, pos) is the row's token.
            np.testing.assert_array_equal(ids[s["seq"], s["pos"]], s["token"])
            assert np.all(val[s["seq"]] == want_val)
            x = s["x"].astype(np.float64)
            g, u = x @ teacher["w_gate"].T, x @ teacher["w_up"].T
            y = (g / (1 + np.exp(-g)) * u) @ teacher["w_down"].T
            np.testing.assert_allclose(y, s["y"], rtol=1e-4, atol=1e-5)
            rows += len(x)
    assert rows == 200
    info = __import__("json").loads((out / "harvest.json").read_text())
    assert info["train_rows"] + info["val_rows"] == 200 and info["hidden"] == 24
    # A layer past the model's is one line and exit 1.
    bad = subprocess.run(cmd[:6] + ["--layer", "9"] + cmd[8:] + ["--force"], capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "error:" in bad.stderr
