"""molt.harvest.from_transformers on a small random-config transformers model (no weights are
downloaded): the shards hold exactly the MLP's (input, output) rows, or the residual stream
entering the pre-MLP norm, in token order, with padding dropped."""
import os

import numpy as np
import pytest

molt = pytest.importorskip("molt")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from molt.harvest import from_transformers, transformer_blocks  # noqa: E402


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48,
                                   num_hidden_layers=3, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg).eval()


def _shards(out):
    files = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
    got = [molt.load_tensors(os.path.join(out, f)) for f in files]
    return np.concatenate([g["x"] for g in got]), np.concatenate([g["y"] for g in got])


def test_mlp_rows_are_the_mlps_inputs_and_outputs(llama, tmp_path):
    ids = torch.randint(0, 97, (3, 11), generator=torch.Generator().manual_seed(1))
    mlp = transformer_blocks(llama)[1].mlp
    out = str(tmp_path / "mlp")
    with from_transformers(llama, 1, out_dir=out, shard_rows=8) as h, torch.no_grad():
        llama(ids)
        llama(ids[:1])
    x, y = _shards(out)
    assert h.rows == 3 * 11 + 11 and x.shape == (44, 32) and y.shape == (44, 32)
    assert h.shards == 6  # 44 rows in shards of 8: five full, one of 4
    with torch.no_grad():
        y_ref = mlp(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
    # the second call repeats row 0's tokens (a batch of one rounds slightly differently)
    np.testing.assert_allclose(x[33:], x[:11], rtol=1e-5, atol=1e-6)
    assert not mlp._forward_hooks  # removed on close


def test_resid_mid_is_the_stream_before_the_pre_mlp_norm(llama, tmp_path):
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(2))
    block = transformer_blocks(llama)[2]
    out = str(tmp_path / "resid")
    with from_transformers(llama, 2, source="resid_mid", out_dir=out) as h, torch.no_grad():
        hidden = llama(ids, output_hidden_states=True).hidden_states
    x, y = _shards(out)
    assert h.rows == 18
    with torch.no_grad():
        y_ref = block.mlp(block.post_attention_layernorm(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
    # The residual stream mid-block is neither the block's input nor its output.
    assert not np.allclose(x, hidden[2].reshape(-1, 32).numpy())
    assert not block.post_attention_layernorm._forward_pre_hooks


@pytest.mark.parametrize("source", ["resid_mid", "resid_post"])
def test_y_x_gives_a_residual_saes_rows_with_padding_dropped(llama, tmp_path, source):
    """y="x": the rows (r, r) of a residual SAE, r the stream entering the pre-MLP norm or the
    block's output (hidden_states[layer + 1]); the attention mask drops padding as for an MLP."""
    ids = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(5))
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    block = transformer_blocks(llama)[1]
    seen = []
    hook = block.post_attention_layernorm.register_forward_pre_hook(
        lambda mod, inputs: seen.append(inputs[0].detach().clone()))
    out = str(tmp_path / source)
    try:
        with from_transformers(llama, 1, source=source, y="x", out_dir=out,
                               attention_mask=lambda: mask) as h, torch.no_grad():
            hidden = llama(ids, attention_mask=mask, output_hidden_states=True).hidden_states
    finally:
        hook.remove()
    x, y = _shards(out)
    assert h.rows == 12 and x.shape == (12, 32)
    assert np.array_equal(x, y)
    ref = seen[0] if source == "resid_mid" else hidden[2]
    keep = mask.reshape(-1).bool()
    np.testing.assert_allclose(x, ref.reshape(-1, 32)[keep].numpy(), rtol=1e-6, atol=1e-6)
    other = hidden[2] if source == "resid_mid" else seen[0]
    assert not np.allclose(x, other.reshape(-1, 32)[keep].numpy())
    with torch.no_grad():  # closed: its hooks are gone, a later pass adds nothing
        llama(ids)
    assert h.rows == 12 and len(os.listdir(out)) == 1


def test_padding_is_dropped_by_the_attention_mask(llama, tmp_path):
    ids = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    out = str(tmp_path / "masked")
    with from_transformers(llama, 0, out_dir=out, attention_mask=lambda: mask) as h, \
            torch.no_grad():
        llama(ids, attention_mask=mask)
    assert h.rows == 10
    x, _ = _shards(out)
    assert x.shape == (10, 32)


def test_bad_source_and_missing_blocks_are_refused(llama):
    with pytest.raises(ValueError, match="source"):
        from_transformers(llama, 0, source="attn", out_dir="unused")
    with pytest.raises(ValueError, match="y='x'"):
        from_transformers(llama, 0, source="resid_post", out_dir="unused")
    with pytest.raises(ValueError, match="y must be"):
        from_transformers(llama, 0, y="z", out_dir="unused")
    with pytest.raises(ValueError, match="transformer blocks"):
        from_transformers(torch.nn.Linear(2, 2), 0, out_dir="unused")
