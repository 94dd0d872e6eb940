"""molt-study attribute end to end on a tiny saved Llama with molt-trained runs (a MOLT and two
SAEs fitted to (r, r)): the JSON validates against circuit-tracer's own pydantic models, its
MOLT links carry their transforms, bad input is one line and exit code 1."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import required, word_tokenizer

torch = required("torch")
transformers = required("transformers")

import molt  # noqa: E402
from molt import attribution  # noqa: E402
from molt.linearized import Dictionary, Linearized, Molt  # noqa: E402

D, LAYER = 16, 1
WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "."]
PEN = "penalty = #molt.penalty<tanh c = 4.0, lambda = 0.002, warmup = 0.1>"
GATE = "#molt.gate<jumprelu threshold = 0.05, bandwidth = 0.05>"
MOLT_SPEC = ("module { molt.layer @m { d_model = 16, element_type = f32, schedule = "
             "#molt.schedule<ranks = [4, 2], counts = [2, 4]>, gate = " + GATE + ", " + PEN +
             ", decoder_bias = true } }")
SAE_SPEC = ("module { molt.transcoder @sae { d_model = 16, element_type = f32, features = 32, "
            "activation = " + GATE + ", " + PEN + ", skip = false, decoder_bias = true } }")


def _save_tiny_lm(folder):
    tok = word_tokenizer(WORDS)
    torch.manual_seed(3)
    cfg = transformers.LlamaConfig(vocab_size=len(WORDS) + 1, hidden_size=D, intermediate_size=24,
                                   num_hidden_layers=3, num_attention_heads=2,
                                   num_key_value_heads=1, max_position_embeddings=32)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.4)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model.eval()


def _train_run(spec, x, y, out, steps=30):
    layer = molt.Layer(spec, batch=len(x), lr=1e-2, steps=steps)
    for _ in range(steps):
        layer.train_step(x, y)
    os.makedirs(out)
    shutil.copytree(layer.bundle, os.path.join(out, "bundle"))
    molt.save_tensors(os.path.join(out, "weights.safetensors"), layer.state_dict(),
                      {"normalization": "folded"})
    return layer


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("attr")
    folder = str(root / "lm")
    model = _save_tiny_lm(folder)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, len(WORDS) + 1, (128,), generator=gen)
    lin = Linearized(model, ids)
    f32 = lambda t: t.float().numpy().copy()
    mid, post = lin.r_mid[LAYER], lin.r_post[LAYER]
    x = lin.molt_input(LAYER, mid)
    out = {"lm": folder, "root": root}
    out["molt_layer"] = _train_run(MOLT_SPEC, f32(x), f32(lin.mlp_out[LAYER]), str(root / "molt"))
    _train_run(SAE_SPEC, f32(mid), f32(mid), str(root / "pre"))
    _train_run(SAE_SPEC, f32(post), f32(post), str(root / "post"))
    out["x"] = f32(x)
    return out


def _args(runs, out, *extra):
    r = runs["root"]
    return ["--model", runs["lm"], "--prompt", "the cat sat on a mat and the dog ran",
            "--run", str(r / "molt"), "--layer", str(LAYER), "--sae-pre", str(r / "pre"),
            "--sae-post", str(r / "post"), "--out", str(out), *extra]


def test_the_float64_molt_is_the_runtime_layer(runs):
    """Molt.from_run reads a run as the runtime computes it (float32 runtime vs float64 here)."""
    m = Molt.from_run(str(runs["root"] / "molt"))
    layer = molt.load(str(runs["root"] / "molt"), batch=64)
    x = runs["x"][:64]
    ref = np.array(layer.forward(x))
    got = m.forward(torch.from_numpy(x).double()).numpy()
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    assert (m.gates(torch.from_numpy(x).double()) > 0).sum() > 0
    sae = Dictionary.from_run(str(runs["root"] / "pre"))
    assert sae.F == 32 and sae.act == "jumprelu"


def test_attribute_writes_circuit_tracers_schema(runs, tmp_path, capsys):
    from circuit_tracer.frontend.graph_models import Model

    out = tmp_path / "graph.json"
    page = tmp_path / "graph.html"
    assert attribution.main(_args(runs, out, "--html", str(page))) == 0
    assert page.stat().st_size > 1000
    err = capsys.readouterr().err
    assert "wrote" in err and "completeness" in err
    doc = json.loads(out.read_text())
    Model(**doc)  # circuit-tracer's own validation of the viewer's JSON
    from molt import graphview
    graphview.validate(doc)  # and what molt's page needs of it
    meta = doc["metadata"]
    assert meta["prompt_tokens"][:3] == ["the", "cat", "sat"]
    assert meta["completeness_max_abs_error"] <= 1e-9
    ids = {n["node_id"] for n in doc["nodes"]}
    assert len(ids) == len(doc["nodes"])
    kinds = {n["feature_type"] for n in doc["nodes"]}
    assert {"embedding", "logit", "sae feature"} <= kinds
    for link in doc["links"]:
        assert link["source"] in ids and link["target"] in ids
    carried = [link for link in doc["links"] if "carriers" in link]
    assert carried, "no kept link crosses the MOLT"
    for link in carried:
        c = link["carriers"]
        assert 1 <= len(c) <= 5
        assert all(x["transform"] == "res" or x["transform"].startswith(f"L{LAYER}.T") for x in c)
        assert all(abs(x["share"] * link["weight"] - x["value"]) <= 1e-9 * max(1, abs(x["value"]))
                   for x in c)
        assert sum(x["abs_share"] for x in c) <= 1 + 1e-9
    for sn in doc["qParams"]["supernodes"]:
        assert sn[0].startswith(f"L{LAYER}.T") and all(m in ids for m in sn[1:])
    assert doc["gate_attribution"] and doc["transform_pairs"]
    for e in doc["error_pairs"]:
        total = e["total_pairs"] + sum(e["terms"].values())
        assert abs(total - e["norm2"]) <= 1e-9 * max(1.0, e["norm2"])


@pytest.mark.parametrize("drop, why", [("--layer", "--layer"), ("--sae-pre", "--sae-pre")])
def test_bad_input_is_one_line_and_exit_1(runs, tmp_path, capsys, drop, why):
    args = _args(runs, tmp_path / "g.json")
    i = args.index(drop)
    del args[i:i + 2]
    assert attribution.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("molt-study attribute: error:") and why in err[0]


def test_a_missing_run_and_a_wrong_kind_are_one_line(runs, tmp_path, capsys):
    args = _args(runs, tmp_path / "g.json")
    args[args.index("--sae-pre") + 1] = str(tmp_path / "nope")
    assert attribution.main(args) == 1
    assert "no such run directory" in capsys.readouterr().err
    args = _args(runs, tmp_path / "g.json")
    args[args.index("--sae-pre") + 1] = str(runs["root"] / "molt")  # a MOLT is no dictionary
    assert attribution.main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "transcoder" in err[0]


def test_harvest_residual_writes_the_sites_rows(runs, tmp_path):
    """(r, r) shards for a residual SAE: the rows are the clean pass's residual at mid.L/post.L."""
    model = transformers.LlamaForCausalLM.from_pretrained(runs["lm"]).eval()
    ids = torch.randint(1, len(WORDS) + 1, (2, 6), generator=torch.Generator().manual_seed(4))
    for site in ("mid", "post"):
        out = tmp_path / site
        assert attribution.harvest_residual(model, LAYER, site, [ids], str(out)) == 12
        t = molt.load_tensors(str(out / "shard_00000.safetensors"))
        assert np.array_equal(t["x"], t["y"])
        for b in range(2):
            lin = Linearized(model, ids[b])
            ref = (lin.r_mid if site == "mid" else lin.r_post)[LAYER].numpy()
            assert np.abs(t["x"][6 * b:6 * b + 6] - ref).max() <= 1e-5 * np.abs(ref).max()
    with pytest.raises(ValueError, match="site"):
        attribution.harvest_residual(model, LAYER, "pre", [ids], str(tmp_path / "x"))


def test_residual_command_writes_both_sites_in_one_pass(runs, tmp_path, capsys):
    """molt-study residual: a harvest's training sequences through the model once, (r, r) rows
    of mid.L and post.L as the clean pass has them; --tokens caps the rows; bad input is one line."""
    from molt import residual

    ids = torch.randint(1, len(WORDS) + 1, (4, 6), generator=torch.Generator().manual_seed(6))
    seqs = tmp_path / "sequences.safetensors"
    from safetensors.numpy import save_file
    save_file({"ids": ids.numpy().astype(np.int32), "val": np.array([0, 1, 0, 0], np.int32)},
              str(seqs))  # I32, as molt-harvest writes them
    out = tmp_path / "res"
    base = ["--model", runs["lm"], "--layer", str(LAYER), "--data", str(tmp_path),
            "--batch", "2"]
    assert residual.main(base + ["--out", str(out)]) == 0
    assert "wrote 18 rows" in capsys.readouterr().err
    assert json.loads((out / "residual.json").read_text())["rows"] == {"mid": 18, "post": 18}
    model = transformers.LlamaForCausalLM.from_pretrained(runs["lm"]).eval()
    for site in ("mid", "post"):
        t = molt.load_tensors(str(out / site / "shard_00000.safetensors"))
        assert np.array_equal(t["x"], t["y"])
        for k, b in enumerate((0, 2, 3)):  # sequence 1 is held out
            lin = Linearized(model, ids[b])
            ref = (lin.r_mid if site == "mid" else lin.r_post)[LAYER].numpy()
            assert np.abs(t["x"][6 * k:6 * k + 6] - ref).max() <= 1e-5 * np.abs(ref).max()
    for extra, n in ((["--tokens", "7"], 7), (["--val"], 6)):  # a cap; the held-out sequence
        few = tmp_path / f"few{n}"
        assert residual.main(base + ["--out", str(few), "--site", "post", *extra]) == 0
        assert sorted(os.listdir(few)) == ["post", "residual.json"]
        assert len(molt.load_tensors(str(few / "post" / "shard_00000.safetensors"))["x"]) == n
    capsys.readouterr()
    for bad, why in ((["--out", str(out)], "already holds shards"),
                     (["--out", str(tmp_path / "b"), "--layer", "9"], "blocks 0..2"),
                     (["--out", str(tmp_path / "c"), "--site", "pre"], "invalid choice")):
        assert residual.main(base + bad) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("molt-study residual: error:") and why in err
    assert residual.main(["--layer", "1", "--out", str(tmp_path / "d")]) == 1
    assert "--data" in capsys.readouterr().err
