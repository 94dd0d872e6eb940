"""molt-study: the transform dashboard on a tiny real harvest (a random Llama saved with
save_pretrained, harvested by molt-harvest's smollm2 path, a short molt-train run of the tiny
MOLT fixture), checked against a float64 NumPy recomputation; both offline pages rendered in
headless Chromium and checked on the DOM and on a screenshot; one-line errors."""
import importlib.util
import json
import os
import re
import subprocess

import numpy as np
import pytest

from conftest import FIXTURES, ROOT, required, tool, save_tiny_llama

molt = pytest.importorskip("molt")
torch = required("torch")
transformers = required("transformers")

import browser  # noqa: E402
from molt import dashboard, graphview, study as study_cli  # noqa: E402

GRAPH_FIXTURE = os.path.join(os.path.dirname(__file__), "data", "attribution_graph.json")
WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "away", "."]


def _save_tiny_lm(folder):
    """A random Llama of width 8 (the tiny MOLT fixture's d) and a word-level tokenizer."""
    return save_tiny_llama(folder, WORDS, hidden=8, intermediate=16, seed=5)


def _harvest(argv):
    """molt-harvest's main in this process (its import of torch and transformers is shared)."""
    path = os.path.join(ROOT, "tools", "molt-harvest", "molt-harvest")
    loader = importlib.machinery.SourceFileLoader("molt_harvest_tool", path)
    spec = importlib.util.spec_from_loader("molt_harvest_tool", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    assert mod.main(argv) == 0


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    work = tmp_path_factory.mktemp("study")
    tok = _save_tiny_lm(work / "lm")
    rng = np.random.default_rng(7)
    (work / "text.txt").write_text("\n\n".join(" ".join(rng.choice(WORDS, 40)) for _ in range(16)))
    _harvest(["--model", "smollm2", "--model-dir", str(work / "lm"), "--layer", "1",
              "--text", str(work / "text.txt"), "--tokens", "480", "--seq-len", "12",
              "--out", str(work / "h"), "--shard-size", "100", "--val-fraction", "0.25"])
    train = tool("molt-train")
    if train is None:
        pytest.fail("molt-train is not built")
    r = subprocess.run([train, os.path.join(FIXTURES, "tiny-molt"), "--data", str(work / "h" / "train"),
                        "--out", str(work / "RUN"), "--steps", "120", "--batch", "64", "--lr", "2e-2",
                        "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = work / "dash"
    assert dashboard.main([str(work / "RUN"), "--data", str(work / "h" / "val"), "--out", str(out),
                           "--top", "5", "--chunk", "50", "--left", "3", "--right", "2",
                           "--quiet"]) == 0
    report = json.loads((out / "transforms.json").read_text())
    return work, tok, report


def _rows(folder):
    from safetensors.numpy import load_file
    parts = [load_file(os.path.join(folder, f)) for f in sorted(os.listdir(folder))]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _reference(layer, x):
    """Gates and ‖g_t U_t V_t x‖ per row and transform, dense, in float64."""
    P = {k: np.asarray(v, np.float64) for k, v in layer.state_dict().items()}
    x = np.asarray(x, np.float64)
    pre = x @ P["enc_w"].T - P["enc_b"]
    g = pre * (pre > np.maximum(P["theta"], 0))
    outs = []
    for k, b in enumerate(layer.model["buckets"]):
        for i in range(b["count"]):
            w = (x @ P[f"v{k}"][i].T) @ P[f"u{k}"][i].T
            outs.append(np.linalg.norm(w, axis=1))
    return g, np.stack(outs, 1) * g


def test_the_report_is_the_data_recomputed_in_float64(study):
    work, tok, rep = study
    layer = molt.load(str(work / "RUN"))
    val = _rows(work / "h" / "val")
    g, out = _reference(layer, val["x"])
    T = g.shape[1]
    assert rep["rows"] == len(val["x"]) and rep["transforms_count"] == T == 5
    assert [t["rank"] for t in rep["transforms"]] == [4, 4, 2, 2, 2]
    np.testing.assert_allclose([t["frequency"] for t in rep["transforms"]], (g > 0).mean(0))
    assert rep["l0"] == pytest.approx((g > 0).sum(1).mean())
    assert sum(t["opened"] > 0 for t in rep["transforms"]) >= 3  # the check sees real contexts
    from molt.torch import MoltMLP
    norms = MoltMLP(layer).norms().detach().numpy()
    from safetensors.numpy import load_file
    ids = load_file(str(work / "h" / "sequences.safetensors"))["ids"]
    for t, entry in enumerate(rep["transforms"]):
        s = np.asarray(entry["spectrum"])
        assert len(s) == entry["rank"] and np.all(np.diff(s) <= 1e-9)
        assert entry["frob"] == pytest.approx(norms[t], rel=1e-5)
        for key, col, other in (("top_gate", g[:, t], out[:, t]), ("top_out", out[:, t], g[:, t])):
            want = np.sort(col[col > 0])[::-1][:5]
            got = [c["value"] for c in entry[key]]
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7, err_msg=f"{key} of {t}")
            for c in entry[key]:
                r = c["row"]
                assert c["value"] == pytest.approx(col[r], rel=2e-5, abs=1e-7)
                assert c["other"] == pytest.approx(other[r], rel=2e-5, abs=1e-7)
                # The context is the harvest's: the marked token is the row's, decoded.
                assert (c["seq"], c["pos"], c["token"]) == (val["seq"][r], val["pos"][r], val["token"][r])
                assert c["ids"] == list(ids[c["seq"], max(0, c["pos"] - 3):c["pos"] + 3])
                assert c["ids"][c["mark"]] == c["token"]
                assert c["text"] == [tok.decode([i]) for i in c["ids"]]
    for b in rep["buckets"]:
        f = [t["frequency"] for t in rep["transforms"] if t["bucket"] == b["bucket"]]
        assert b["mean_frequency"] == pytest.approx(np.mean(f))
    assert rep["decoded"] and rep["has_context"]


def _offline(page_text):
    # Nothing may come from elsewhere: no external src/href, no CSS imports or url(), no fetch.
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page_text)
    assert "@import" not in page_text and "url(" not in page_text
    assert "fetch(" not in page_text and "XMLHttpRequest" not in page_text
    assert "default-src 'none'" in page_text


def test_the_dashboard_page_renders_in_chromium(study, tmp_path):
    work, tok, rep = study
    page = work / "dash" / "transforms.html"
    _offline(page.read_text())
    # The view named in the address: transforms by frequency, most frequent first.
    dom = browser.Dom(browser.dump_dom(page, tmp_path / "profile", "sort=frequency"))
    assert dom.find("body", data_ready="1"), "the page's script did not finish"
    order = sorted(rep["transforms"], key=lambda t: (-t["frequency"], t["index"]))
    rows = dom.find("tr", cls="transform")
    assert [int(a["data-index"]) for a, _ in rows] == [t["index"] for t in order]
    assert [int(a["data-rank"]) for a, _ in rows] == [t["rank"] for t in order]
    assert [text for _, text in dom.find("td", cls="rank")] == [str(t["rank"]) for t in order]
    marks = [text for _, text in dom.find("mark", cls="tok")]
    want = [c["text"][c["mark"]] for t in order for k in ("top_gate", "top_out") for c in t[k]]
    assert marks == want and len(marks) >= 6
    assert len(dom.find("circle", cls="pt")) == 5 and len(dom.find("line", cls="mean")) == 2
    assert len(dom.find("tr", cls="bucket")) == 2
    img = browser.screenshot(page, tmp_path / "dash.png", tmp_path / "profile", 1280, 1100)
    assert img.size == (1280, 1100)
    assert browser.non_background_share(img) > 0.03
    assert browser.colour_share(img, (0xff, 0xd8, 0x4d)) > 1e-4  # the marked tokens' fill


def test_the_graph_page_renders_in_chromium(tmp_path):
    page = tmp_path / "graph.html"
    assert graphview.main([GRAPH_FIXTURE, "--out", str(page)]) == 0
    graph = json.load(open(GRAPH_FIXTURE))
    _offline(page.read_text())
    dom = browser.Dom(browser.dump_dom(page, tmp_path / "profile", "node=8_301_3"))
    assert dom.find("body", data_ready="1")
    # Every node is drawn; a supernode's members in one cell as one group node.
    members = {m for sn in graph["qParams"]["supernodes"] for m in sn[1:]}
    groups = dom.find("g", cls="group")
    assert sorted(a["data-members"] for a, _ in groups) == ["7_12000_3 7_12001_3", "7_31000_3"]
    singles = [a["data-id"] for a, _ in dom.find("g", cls="node") if "data-members" not in a]
    assert sorted(singles) == sorted(n["node_id"] for n in graph["nodes"] if n["node_id"] not in members)
    edges = {(a["data-source"], a["data-target"]): a for a, _ in dom.find("path", cls="edge")}
    assert len(edges) == len(graph["links"])
    for link in graph["links"]:
        a = edges[(link["source"], link["target"])]
        assert a["data-carrier"] == (graphview.top_carrier(link) or "")
    top = edges[("7_112_2", "8_301_3")]
    assert top["data-carrier"] == "12" and top["stroke"] == "#d62728"  # the heaviest transform
    assert edges[("7_40_3", "8_301_3")]["data-carrier"] == "res"
    assert [t for _, t in dom.find("text", cls="token")] == graph["metadata"]["prompt_tokens"]
    legend = [a["data-carrier"] for a, _ in dom.find("div", cls="entry")]
    assert legend == ["12", "31", "5", "res", "none"]
    assert [a["data-name"] for a, _ in dom.find("div", cls="supernode")] == \
        [s[0] for s in graph["qParams"]["supernodes"]]
    # The node picked in the address: every edge that does not touch it is faded, it is ringed.
    for a, _ in dom.find("path", cls="edge"):
        touches = "8_301_3" in (a["data-source"], a["data-target"])
        assert ("faded" in a["class"].split()) != touches
    assert [a["data-id"] for a, _ in dom.find("g", cls="picked")] == ["8_301_3"]
    img = browser.screenshot(page, tmp_path / "graph.png", tmp_path / "profile", 1200, 800)
    assert img.size == (1200, 800)
    assert browser.non_background_share(img) > 0.02
    assert browser.colour_share(img, (0xd6, 0x27, 0x28), tol=30) > 5e-5  # transform 12's edges


@pytest.mark.parametrize("case", ["no-run", "bad-width", "no-data", "bad-top", "bundle-not-run"])
def test_dashboard_bad_input_is_one_line_and_exit_1(study, tmp_path, capsys, case):
    work, _, _ = study
    run, data = str(work / "RUN"), str(work / "h" / "val")
    bad = tmp_path / "bad"
    bad.mkdir()
    molt.save_tensors(str(bad / "s.safetensors"), {"x": np.zeros((4, 3)), "y": np.zeros((4, 3))})
    argv = {"no-run": [str(tmp_path / "nope"), "--data", data],
            "bad-width": [run, "--data", str(bad)],
            "no-data": [run, "--data", str(tmp_path / "missing")],
            "bad-top": [run, "--data", data, "--top", "0"],
            "bundle-not-run": [os.path.join(FIXTURES, "tiny-transcoder"), "--data", data]}[case]
    capsys.readouterr()
    assert dashboard.main(argv + ["--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("molt-study transforms: error: "), err


def test_graph_bad_input_is_one_line_and_exit_1(tmp_path, capsys):
    graph = json.load(open(GRAPH_FIXTURE))
    graph["links"].append({"source": "7_112_2", "target": "nowhere", "weight": 1.0})
    (tmp_path / "g.json").write_text(json.dumps(graph))
    (tmp_path / "n.json").write_text("{not json")
    for path, why in ((tmp_path / "g.json", "no node's id"), (tmp_path / "n.json", "not JSON")):
        capsys.readouterr()
        assert graphview.main([str(path), "--out", str(tmp_path / "p.html")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("molt-study graph: error: ") and why in err


def test_the_launcher_lists_the_subcommands_and_refuses_unknown_ones():
    launcher = tool("molt-study")
    if launcher is None:
        pytest.fail("build/bin/molt-study is missing (tools/molt-study)")
    r = subprocess.run([launcher, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and all(s in r.stdout for s in study_cli.SUBCOMMANDS)
    r = subprocess.run([launcher, "nope"], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "molt-study: error:" in r.stderr


def test_subcommand_help(capsys):
    for main, flag in ((dashboard.main, "--data"), (graphview.main, "--out")):
        assert main(["--help"]) == 0
        assert flag in capsys.readouterr().out


def _circuit_tracer_models():
    """circuit-tracer's pydantic graph models, loaded from their file (the package's __init__
    would pull in its server; only pydantic is needed)."""
    spec = importlib.util.find_spec("circuit_tracer")
    if spec is None:
        required("circuit_tracer")  # fails in CI, skips elsewhere
    path = os.path.join(list(spec.submodule_search_locations)[0], "frontend", "graph_models.py")
    loader = importlib.machinery.SourceFileLoader("circuit_tracer_graph_models", path)
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(mod)
    return mod


def test_the_graph_fixture_is_in_circuit_tracers_schema():
    models = _circuit_tracer_models()
    graph = json.load(open(GRAPH_FIXTURE))
    parsed = models.Model(**graph)
    assert len(parsed.nodes) == len(graph["nodes"]) and len(parsed.links) == len(graph["links"])
    for link in graph["links"]:
        models.Link(**link)  # the carriers ride along as an extra key
    # The fixture is as the page expects it, and carriers sum to their edge.
    graphview.validate(graph)
    for link in graph["links"]:
        if "carriers" in link:
            assert sum(c["value"] for c in link["carriers"]) == pytest.approx(link["weight"])


def test_a_graph_from_molt_attribution_renders_with_its_carriers(tmp_path):
    """molt.attribution's own JSON (a tiny random Llama, two MOLT layers, SAEs at both
    boundaries) through the page: what `molt-study attribute --html` writes."""
    attribution = pytest.importorskip("molt.attribution")
    from molt.linearized import Linearized
    from test_attribution import _random_molt, _random_sae, _tiny_model
    model = _tiny_model()
    gen = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 40, (5,), generator=gen)
    molts = {1: _random_molt(gen), 2: _random_molt(gen)}
    dicts = {f"{k}.{l}": _random_sae(gen) for l in (1, 2) for k in ("mid", "post")}
    g = attribution.attribute(Linearized(model, ids, molts, dicts))
    doc = attribution.to_json(g, [f"t{int(t)}" for t in ids], "tiny", decode=lambda t: f"t{t}")
    _circuit_tracer_models().Model(**doc)
    page = tmp_path / "g.html"
    graphview.write_html(doc, str(page))
    dom = browser.Dom(browser.dump_dom(page, tmp_path / "profile"))
    assert dom.find("body", data_ready="1")
    edges = {(a["data-source"], a["data-target"]): a for a, _ in dom.find("path", cls="edge")}
    assert len(edges) == len(doc["links"])
    carried = [l for l in doc["links"] if l.get("carriers")]
    assert carried, "the tiny graph has no edge through a MOLT"
    for link in doc["links"]:
        assert edges[(link["source"], link["target"])]["data-carrier"] == \
            (graphview.top_carrier(link) or "")
    members = {m for sn in doc["qParams"]["supernodes"] for m in sn[1:]}
    drawn = sum(len(a.get("data-members", "").split()) or 1 for a, _ in dom.find("g", cls="node"))
    assert drawn == len(doc["nodes"]) and len(members) <= len(doc["nodes"])
