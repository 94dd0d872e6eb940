"""The spliced evaluation through the tools, on a tiny random-weight Llama saved to disk: harvest
one MLP (molt-harvest --model smollm2 --model-dir), train a tiny MOLT on it (molt-train), then
molt-eval --splice. Fixed points: a run whose gates never open and whose decoder bias is the
harvest's mean output is the mean ablation (0 % recovered, through molt.splice); molt-eval's clean cross-entropy is
the whole model's, computed here directly; its spliced numbers are molt.splice's in-process."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, required, tool

torch = required("torch")
transformers = required("transformers")
molt = pytest.importorskip("molt")

from molt import lm, splice  # noqa: E402
from test_lm import _save_tiny_lm  # noqa: E402

SPEC = """module {
  molt.layer @molt {
    d_model = 16, element_type = f32,
    schedule = #molt.schedule<ranks = [4, 2], counts = [2, 4]>,
    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>,
    decoder_bias = true
  }
}
"""


@pytest.fixture(scope="module")
def harvested(tmp_path_factory):
    if not (tool("molt-train") and tool("molt-eval")):
        pytest.skip("molt-train / molt-eval not built")
    tmp = tmp_path_factory.mktemp("splice")
    words = _save_tiny_lm(tmp / "lm")
    rng = np.random.default_rng(5)
    text = tmp / "text.txt"
    text.write_text("\n\n".join(" ".join(rng.choice(words, 30)) for _ in range(12)))
    data = tmp / "h"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "molt-harvest", "molt-harvest"),
                        "--model", "smollm2", "--model-dir", str(tmp / "lm"), "--layer", "1",
                        "--text", str(text), "--tokens", "240", "--seq-len", "12",
                        "--out", str(data), "--val-fraction", "0.25"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (tmp / "spec.mlir").write_text(SPEC)
    run = tmp / "run"
    r = subprocess.run([tool("molt-train"), str(tmp / "spec.mlir"), "--data", str(data / "train"),
                        "--out", str(run), "--steps", "30", "--batch", "64", "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return tmp, data, run


def _molt_eval(run, data, *extra):
    return subprocess.run([tool("molt-eval"), str(run), "--data", str(data / "val"), "--splice",
                           str(data), *extra], capture_output=True, text=True,
                          env=dict(os.environ, MOLT_PY_STAGE=os.path.dirname(os.path.dirname(
                              os.path.abspath(molt.__file__)))))


def test_molt_eval_splice_matches_the_model_and_molt_splice(harvested):
    tmp, data, run = harvested
    r = _molt_eval(run, data, "--json", "--splice-sequences", "0")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert "nmse" in m and "l0" in m  # molt-eval's own report, merged with the spliced one
    ids = splice.held_out_ids(str(data))
    assert m["spliced_tokens"] == ids.shape[0] * (ids.shape[1] - 1) == 5 * 11
    model, _ = lm.causal_lm(str(tmp / "lm"))
    with torch.no_grad():  # the whole model, no truncation: the clean loss
        logp = torch.log_softmax(model(ids).logits[:, :-1].double(), -1)
        ce = -logp.gather(-1, ids[:, 1:].unsqueeze(-1)).mean().item()
    assert m["ce_clean"] == pytest.approx(ce, rel=1e-9)
    assert m["kl"] >= 0 and m["ce_spliced"] != pytest.approx(m["ce_clean"], abs=1e-9)
    direct = splice.evaluate_runs([str(run)], str(data), sequences=None)[str(run)]
    for k in ("ce_clean", "ce_spliced", "ce_mean", "ce_zero", "kl", "recovered_vs_mean"):
        assert m[k] == pytest.approx(direct[k], rel=1e-9, abs=1e-12), k
    text = _molt_eval(run, data)
    assert text.returncode == 0 and "recovered vs mean" in text.stdout


def test_a_run_that_outputs_the_mean_recovers_nothing(harvested):
    tmp, data, run = harvested
    mean_run = tmp / "mean-run"
    subprocess.run(["cp", "-r", str(run), str(mean_run)], check=True)
    w = molt.run_weights(str(mean_run))
    w["theta"] = np.full_like(w["theta"], 1e6)  # no gate ever opens: ŷ = dec_b
    w["dec_b"] = splice.train_mean_y(str(data)).astype(np.float32)
    weights = mean_run / "weights.safetensors"
    molt.save_tensors(str(weights), w, molt.read_metadata(str(weights)))
    # molt.load (what the splice runs) reads the newer weights file; molt-eval's own report
    # reads the checkpoint, so this run is spliced through molt.splice directly.
    m = splice.evaluate_runs([str(mean_run)], str(data), sequences=None)[str(mean_run)]
    assert m["ce_spliced"] == pytest.approx(m["ce_mean"], abs=1e-6)
    assert m["recovered_vs_mean"] == pytest.approx(0.0, abs=1e-4)


def test_splice_errors_are_one_line(harvested, tmp_path):
    _, data, run = harvested
    (tmp_path / "val").mkdir()
    r = _molt_eval(run, data, "--splice-sequences", "-1")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    bad = subprocess.run([tool("molt-eval"), str(run), "--data", str(data / "val"), "--splice",
                          str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "molt-eval: error:" in bad.stderr and "harvest.json" in bad.stderr
    # A bad command line to the Python evaluator itself: one line and exit 1, not argparse's usage.
    assert splice.main(["--data"]) == 1
    assert splice.main([str(run), "--data", str(data), "--no-such-flag"]) == 1
