"""pytest setup for the molt package: find the package (installed, or staged by a CMake build
via $MOLT_PY_STAGE) and the hand-built fixture bundles, and a float64 NumPy reference MOLT."""
import importlib
import os
import shutil
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if os.environ.get("MOLT_PY_STAGE"):
    sys.path.insert(0, os.environ["MOLT_PY_STAGE"])
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def required(name):
    """pytest.importorskip(name), except where the module must be there: under CI=true or
    MOLT_REQUIRE_TORCH=1 (scripts/test sets it; scripts/bootstrap installs torch) a missing
    module fails the tests instead of skipping them."""
    if os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get("MOLT_REQUIRE_TORCH") == "1":
        return importlib.import_module(name)
    return pytest.importorskip(name)


def tool(name):
    """A built molt tool: in $MOLT_TOOL_DIR (the ctest sets it to the build's bin/), in
    build/bin, or on PATH; None when there is none."""
    for d in (os.environ.get("MOLT_TOOL_DIR"), os.path.join(ROOT, "build", "bin")):
        if d and os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return shutil.which(name)


@pytest.fixture
def fixture_bundle():
    return lambda name: os.path.join(FIXTURES, name)


def reference_forward(model, p, x):
    """ŷ in float64, dense over every transform (docs/architecture.md §1), independent of the runtime."""
    x = np.asarray(x, np.float64)
    P = {k: np.asarray(v, np.float64) for k, v in p.items()}
    gate = model["gate"]["kind"]
    if model["kind"] == "molt":
        pre = x @ P["enc_w"].T - P["enc_b"]
        # JumpReLU applies θ⁺ = max(θ, 0) (docs/bundle.md), so g ≥ 0.
        g = pre * (pre > np.maximum(P["theta"], 0)) if gate == "jumprelu" else np.maximum(pre, 0)
        y = np.zeros_like(x)
        t = 0
        for k, b in enumerate(model["buckets"]):
            for i in range(b["count"]):
                U, V = P[f"u{k}"][i], P[f"v{k}"][i]  # [d,R], [R,d]
                y += g[:, t:t + 1] * ((x @ V.T) @ U.T)
                t += 1
    else:
        pre = x @ P["enc_w"].T + P["enc_b"]
        g = np.maximum(pre, 0)
        y = g @ P["dec_w"]
        if "skip_w" in P:
            y += x @ P["skip_w"].T
    if "dec_b" in P:
        y += P["dec_b"]
    return y


def random_params(layer, seed, scale=0.4):
    """Params large enough that a fair share of transforms is open for random inputs."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in layer.param_names:
        shape = layer.state_dict()[name].shape
        a = rng.normal(0, scale, shape).astype(np.float32)
        if name == "theta":
            a = np.full(shape, 0.1, np.float32)
        out[name] = a
    return out


def word_tokenizer(words):
    """A word-level transformers tokenizer over `words` (id 0 is [UNK]), for tiny saved LMs."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[UNK]"] + list(words))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]")


def save_tiny_llama(folder, words, hidden, intermediate, seed):
    """A random two-layer Llama over `words` (see word_tokenizer) saved with its tokenizer in
    `folder`, as transformers would save a real one; returns the tokenizer."""
    import torch
    import transformers

    tok = word_tokenizer(words)
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=len(words) + 1, hidden_size=hidden,
                                   intermediate_size=intermediate, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1,
                                   max_position_embeddings=32)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return tok
