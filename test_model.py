"""Tests of the partial-RoPE model: python -m pytest -q test_model.py

The references below are written independently of model.py, in float64, from the GPT-NeoX rule:
rotate the first r channels, pair channel i with i + r/2, frequencies base ** (-2i / r).
"""

import math

import pytest
import torch

from model import GPT, GPTConfig, RotaryEmbedding, apply_rotary, build_rope_cache, rotary_dims, swiglu_hidden


def reference_partial_rope(x: torch.Tensor, r: int, base: float = 10000.0) -> torch.Tensor:
    """Rotate x, (B, nh, T, hs), pair by pair with explicit 2x2 rotations in float64."""
    x = x.double()
    out = x.clone()
    T = x.shape[-2]
    for i in range(r // 2):
        theta = base ** (-2.0 * i / r)
        for t in range(T):
            angle = t * theta
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[..., t, i], x[..., t, i + r // 2]
            out[..., t, i] = a * c - b * s
            out[..., t, i + r // 2] = a * s + b * c
    return out


def rope_for(r: int, T: int, base: float = 10000.0):
    cos, sin = build_rope_cache(T, r, base)
    return cos, sin


# -----------------------------------------------------------------------------
# Rotated channel count and validation

@pytest.mark.parametrize("fraction, expected", [
    (0.0, 0), (0.04, 2), (0.1, 6), (0.25, 16), (0.5, 32), (0.75, 48), (1.0, 64)])
def test_rotary_dims_head_dim_64(fraction, expected):
    assert rotary_dims(64, fraction) == expected


def test_rotary_dims_rounds_down_to_even():
    assert rotary_dims(64, 0.05) == 2    # int(3.2) = 3 -> 2
    assert rotary_dims(32, 0.1) == 2     # int(3.2) = 3 -> 2
    assert rotary_dims(128, 0.1) == 12   # int(12.8) = 12
    assert rotary_dims(10, 0.5) == 4     # int(5) = 5 -> 4


@pytest.mark.parametrize("fraction", [-0.1, 1.01, float("nan"), float("inf")])
def test_invalid_fraction_raises(fraction):
    with pytest.raises(ValueError, match="rope_fraction"):
        rotary_dims(64, fraction)
    with pytest.raises(ValueError):
        GPTConfig(rope_fraction=fraction)


def test_too_small_fraction_names_smallest():
    with pytest.raises(ValueError) as info:
        rotary_dims(64, 0.01)
    assert "2/64 = 0.03125" in str(info.value)
    assert rotary_dims(64, 0.03125) == 2


# -----------------------------------------------------------------------------
# The rotation itself

@pytest.mark.parametrize("head_dim, fraction", [
    (64, 0.04), (64, 0.1), (64, 0.25), (64, 0.5), (64, 1.0), (32, 0.5), (16, 1.0), (48, 0.75)])
def test_rotation_matches_float64_reference(head_dim, fraction):
    torch.manual_seed(0)
    r = rotary_dims(head_dim, fraction)
    T = 40
    x = torch.randn(2, 3, T, head_dim)
    cos, sin = rope_for(r, T)
    got = apply_rotary(x, cos, sin)
    want = reference_partial_rope(x, r)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fraction", [0.04, 0.1, 0.5])
def test_pass_through_channels_bit_identical(fraction):
    torch.manual_seed(1)
    r = rotary_dims(64, fraction)
    x = torch.randn(2, 2, 16, 64)
    cos, sin = rope_for(r, 16)
    out = apply_rotary(x, cos, sin)
    assert torch.equal(out[..., r:], x[..., r:])
    assert not torch.equal(out[..., :r], x[..., :r])


def test_pass_through_bit_identical_in_bf16():
    torch.manual_seed(2)
    x = torch.randn(1, 2, 16, 64).to(torch.bfloat16)
    cos, sin = rope_for(6, 16)
    out = apply_rotary(x, cos, sin)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out[..., 6:], x[..., 6:])


def test_position_zero_is_identity():
    x = torch.randn(1, 1, 1, 64)
    cos, sin = rope_for(64, 1)
    assert torch.allclose(apply_rotary(x, cos, sin), x, atol=0, rtol=0)


@pytest.mark.parametrize("fraction", [0.04, 0.1, 1.0])
def test_qk_depends_only_on_offset(fraction):
    # The same q and k placed at positions (m, n) and (m + s, n + s) give the same dot product.
    torch.manual_seed(3)
    r = rotary_dims(64, fraction)
    T = 64
    q, k = torch.randn(64, dtype=torch.float64), torch.randn(64, dtype=torch.float64)
    cos, sin = rope_for(r, T)
    qs = apply_rotary(q.float().expand(1, 1, T, 64), cos, sin)[0, 0].double()
    ks = apply_rotary(k.float().expand(1, 1, T, 64), cos, sin)[0, 0].double()
    for offset in (0, 3, 17):
        dots = [float(qs[m + offset] @ ks[m]) for m in range(0, T - offset, 7)]
        assert max(dots) - min(dots) < 1e-4, (offset, dots)
    # and the score does change with the offset when anything is rotated
    assert abs(float(qs[5] @ ks[0]) - float(qs[0] @ ks[0])) > 1e-3


def test_frequencies_span_rotated_width():
    # With r = 6 the slowest pair turns at base ** (-4/6), not base ** (-4/64).
    cos, sin = build_rope_cache(2, 6, 10000.0)
    angles = torch.atan2(sin[1, :3].double(), cos[1, :3].double())
    want = torch.tensor([10000.0 ** (-2.0 * i / 6) for i in range(3)], dtype=torch.float64)
    assert torch.allclose(angles, want, atol=1e-6)
    assert torch.equal(cos[:, :3], cos[:, 3:])  # channel i and i + r/2 share the angle


def test_cache_matches_float64_reference_to_1e6():
    T, r = 4096, 64
    cos, sin = build_rope_cache(T, r, 10000.0)
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    inv = torch.tensor([10000.0 ** (-2.0 * i / r) for i in range(r // 2)], dtype=torch.float64)
    angles = torch.cat([pos * inv, pos * inv], dim=1)
    assert cos.dtype == torch.float32
    assert (cos.double() - angles.cos()).abs().max() < 1e-6
    assert (sin.double() - angles.sin()).abs().max() < 1e-6


# -----------------------------------------------------------------------------
# The cos/sin cache in the model

def tiny_config(**overrides) -> GPTConfig:
    values = dict(block_size=32, vocab_size=50, n_layer=2, n_head=2, n_embd=128)
    values.update(overrides)
    return GPTConfig(**values)


@pytest.mark.parametrize("fraction, r", [(0.04, 2), (0.1, 6), (0.25, 16), (0.5, 32), (1.0, 64)])
def test_cache_bytes_scale_with_r(fraction, r):
    model = GPT(tiny_config(rope_fraction=fraction))
    assert model.rotary.cos.shape == (32, r)
    assert model.rope_cache_bytes() == 2 * 32 * r * 4
    assert model.full_rope_cache_bytes() == 2 * 32 * 64 * 4
    assert model.full_rope_cache_bytes() / model.rope_cache_bytes() == 64 / r


def test_cache_at_ten_percent_is_6_of_64():
    model = GPT(tiny_config(rope_fraction=0.1))
    cos, sin = model.rotary.cos, model.rotary.sin
    used = cos.numel() * cos.element_size() + sin.numel() * sin.element_size()
    assert used * 64 == model.full_rope_cache_bytes() * 6
    assert round(model.full_rope_cache_bytes() / used, 1) == 10.7


def test_nope_has_no_cache():
    model = GPT(tiny_config(rope_fraction=0.0))
    assert model.rotary is None
    assert model.rope_cache_bytes() == 0
    assert not any("cos" in name or "sin" in name for name, _ in model.named_buffers())


def test_nope_never_calls_rotary(monkeypatch):
    import model as model_module
    calls = []
    monkeypatch.setattr(model_module, "apply_rotary", lambda *a: calls.append(1))
    m = GPT(tiny_config(rope_fraction=0.0))
    m(torch.randint(0, 50, (1, 8)))
    assert calls == []


def test_cache_not_in_state_dict():
    model = GPT(tiny_config(rope_fraction=0.5))
    assert not any("cos" in k or "sin" in k for k in model.state_dict())


def test_cache_stays_float32_after_bf16_cast():
    model = GPT(tiny_config(rope_fraction=0.25)).to(torch.bfloat16)
    assert model.wte.weight.dtype == torch.bfloat16
    assert model.rotary.cos.dtype == torch.float32
    reference, _ = build_rope_cache(32, 16, 10000.0)
    assert torch.equal(model.rotary.cos, reference)


def captured_rotary_inputs(model: GPT, idx: torch.Tensor, monkeypatch) -> list:
    import model as model_module
    seen = []
    original = model_module.apply_rotary

    def spy(x, cos, sin):
        seen.append((x.dtype, cos, sin))
        return original(x, cos, sin)

    monkeypatch.setattr(model_module, "apply_rotary", spy)
    model(idx)
    return seen


def test_bf16_model_uses_float32_angles(monkeypatch):
    model = GPT(tiny_config(rope_fraction=1.0)).to(torch.bfloat16)
    seen = captured_rotary_inputs(model, torch.randint(0, 50, (1, 32)), monkeypatch)
    assert seen and all(x_dtype == torch.bfloat16 for x_dtype, _, _ in seen)
    T, r = 32, 64
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    inv = torch.tensor([10000.0 ** (-2.0 * i / r) for i in range(r // 2)], dtype=torch.float64)
    angles = torch.cat([pos * inv, pos * inv], dim=1)
    for _, cos, sin in seen:
        assert cos.dtype == torch.float32
        assert (cos.double() - angles.cos()).abs().max() < 1e-6
        assert (sin.double() - angles.sin()).abs().max() < 1e-6


def test_bf16_rotation_within_final_cast_rounding():
    # Rotating bf16 input must equal the float32 rotation rounded once to bf16.
    torch.manual_seed(4)
    x = torch.randn(2, 2, 32, 64).to(torch.bfloat16)
    cos, sin = rope_for(64, 32)
    got = apply_rotary(x, cos, sin)
    want = reference_partial_rope(x.float(), 64).to(torch.bfloat16)
    diff = (got.double() - want.double()).abs()
    ulp = want.double().abs() * 2 ** -7  # one bf16 unit in the last place, or less
    assert (diff <= ulp + 1e-30).all()


def test_autocast_uses_float32_angles(monkeypatch):
    model = GPT(tiny_config(rope_fraction=0.5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        seen = captured_rotary_inputs(model, torch.randint(0, 50, (1, 32)), monkeypatch)
    reference, _ = build_rope_cache(32, 32, 10000.0)
    assert seen
    for _, cos, _ in seen:
        assert cos.dtype == torch.float32
        assert torch.equal(cos, reference)


# -----------------------------------------------------------------------------
# Attention details: v untouched, QK-norm before RoPE

def test_values_never_rotated(monkeypatch):
    # Capture what reaches attention and rebuild q, k, v by hand from the block's input.
    import model as model_module
    torch.manual_seed(5)
    m = GPT(tiny_config(rope_fraction=1.0, n_layer=1))
    idx = torch.randint(0, 50, (2, 16))
    seen = {}
    original = model_module.F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.update(q=q, k=k, v=v)
        return original(q, k, v, **kwargs)

    monkeypatch.setattr(model_module.F, "scaled_dot_product_attention", spy)
    m(idx)
    h = m.blocks[0].ln_1(m.wte(idx))
    q, k, v = (t.view(2, 16, 2, 64).transpose(1, 2) for t in m.blocks[0].attn.c_attn(h).split(128, dim=2))
    cos, sin = build_rope_cache(16, 64, 10000.0)
    assert torch.equal(seen["v"], v)
    assert torch.allclose(seen["q"], apply_rotary(q, cos, sin), atol=1e-6)
    assert torch.allclose(seen["k"], apply_rotary(k, cos, sin), atol=1e-6)
    assert not torch.allclose(seen["q"], q, atol=1e-3)


def test_qk_norm_applied_before_rope(monkeypatch):
    import model as model_module
    seen = []
    original = model_module.apply_rotary

    def spy(x, cos, sin):
        seen.append(x.float().pow(2).mean(-1))
        return original(x, cos, sin)

    monkeypatch.setattr(model_module, "apply_rotary", spy)
    m = GPT(tiny_config(rope_fraction=0.5, qk_norm=True, n_layer=1))
    m(torch.randint(0, 50, (2, 16)))
    # RMSNorm with unit gain gives mean-square 1 per head vector at the input of RoPE
    assert len(seen) == 2
    for ms in seen:
        assert torch.allclose(ms, torch.ones_like(ms), atol=1e-3)


def test_qk_norm_parameters_per_head_dim():
    m = GPT(tiny_config(qk_norm=True))
    assert m.blocks[0].attn.q_norm.weight.shape == (64,)
    assert m.blocks[0].attn.k_norm.weight.shape == (64,)


def test_same_seed_same_initial_weights_across_fractions():
    weights = []
    for fraction in (0.0, 0.1, 1.0):
        torch.manual_seed(7)
        weights.append(GPT(tiny_config(rope_fraction=fraction)).state_dict())
    torch.manual_seed(7)
    qk = GPT(tiny_config(rope_fraction=0.0, qk_norm=True)).state_dict()
    for other in weights[1:] + [qk]:
        for name, tensor in weights[0].items():
            assert torch.equal(tensor, other[name]), name


# -----------------------------------------------------------------------------
# Context length

def test_forward_at_block_size_works():
    model = GPT(tiny_config())
    logits, loss = model(torch.randint(0, 50, (2, 32)), torch.randint(0, 50, (2, 32)))
    assert logits.shape == (2, 32, 50)
    assert torch.isfinite(loss)


def test_longer_input_raises():
    model = GPT(tiny_config())
    with pytest.raises(ValueError, match="exceeds block_size=32"):
        model(torch.randint(0, 50, (1, 33)))


@pytest.mark.parametrize("fraction", [0.0, 0.1, 1.0])
def test_long_context_path_computes_new_positions(fraction, monkeypatch):
    torch.manual_seed(8)
    model = GPT(tiny_config(rope_fraction=fraction))
    idx = torch.randint(0, 50, (1, 96))
    logits, _ = model(idx, allow_long_context=True)
    assert logits.shape == (1, 96, 50)
    # the first 32 positions are unchanged by what follows (causal), and match a normal forward
    short, _ = model(idx[:, :32])
    assert torch.allclose(logits[:, :32], short, atol=1e-5)
    if fraction > 0:
        cos, sin = model.rotary.cos_sin(96)
        want_cos, want_sin = build_rope_cache(96, model.config.rope_dims, 10000.0)
        assert torch.equal(cos, want_cos)
        assert torch.equal(sin, want_sin)
        assert not torch.equal(cos[40], cos[40 - 32])  # no wrapping
        assert model.rotary.cos.shape[0] == 32       # the stored cache is not grown


def test_learned_positions_cannot_extrapolate():
    model = GPT(tiny_config(pos_emb="learned", rope_fraction=0.0))
    with pytest.raises(ValueError, match="cannot extrapolate"):
        model(torch.randint(0, 50, (1, 40)), allow_long_context=True)


# -----------------------------------------------------------------------------
# Architectures, parameter counts, training, sampling

def hand_count(n_layer, n_embd, vocab, block, arch="llama", qk_norm=False, tied=False, learned=False):
    head_dim = 64
    attn = 3 * n_embd * n_embd + n_embd * n_embd + (2 * head_dim if qk_norm else 0)
    if arch == "llama":
        hidden = swiglu_hidden(n_embd)
        mlp = n_embd * 2 * hidden + hidden * n_embd
    else:
        mlp = n_embd * 4 * n_embd * 2
    norms = 2 * n_embd
    total = n_layer * (attn + mlp + norms) + n_embd  # + final norm
    total += vocab * n_embd * (1 if tied else 2)
    total += block * n_embd if learned else 0
    return total


@pytest.mark.parametrize("overrides", [
    {}, {"qk_norm": True}, {"arch": "gpt2"}, {"tie_embeddings": True},
    {"pos_emb": "learned", "rope_fraction": 0.0}, {"parallel_residual": True}])
def test_param_count_matches_hand_count(overrides):
    config = tiny_config(**overrides)
    model = GPT(config)
    want = hand_count(2, 128, 50, 32, arch=config.arch, qk_norm=config.qk_norm,
                      tied=config.tie_embeddings, learned=config.pos_emb == "learned")
    assert model.num_params() == want


def test_swiglu_hidden_width():
    assert swiglu_hidden(128) == 384   # 341.3 rounded up to a multiple of 64
    assert swiglu_hidden(384) == 1024


def train_steps(config: GPTConfig, steps: int = 30) -> tuple[float, float]:
    torch.manual_seed(0)
    model = GPT(config)
    opt = model.configure_optimizer(3e-3, 0.1, (0.9, 0.95), "cpu")
    # a repeating pattern is learnable within a few dozen steps
    data = torch.arange(0, 400) % 13
    first = last = None
    for step in range(steps):
        starts = torch.randint(0, len(data) - config.block_size - 1, (8,))
        x = torch.stack([data[s:s + config.block_size] for s in starts])
        y = torch.stack([data[s + 1:s + 1 + config.block_size] for s in starts])
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    return first, last


@pytest.mark.parametrize("overrides", [
    {"rope_fraction": 0.1}, {"rope_fraction": 0.0}, {"rope_fraction": 0.0, "qk_norm": True},
    {"parallel_residual": True}, {"arch": "gpt2", "pos_emb": "learned", "rope_fraction": 0.0},
    {"tie_embeddings": True}])
def test_tiny_training_lowers_loss(overrides):
    first, last = train_steps(tiny_config(n_layer=1, **overrides))
    assert last < 0.6 * first, (first, last)


def test_parallel_residual_differs_from_sequential():
    torch.manual_seed(9)
    seq = GPT(tiny_config())
    par = GPT(tiny_config(parallel_residual=True))
    par.load_state_dict(seq.state_dict())
    idx = torch.randint(0, 50, (1, 16))
    assert not torch.allclose(seq(idx)[0], par(idx)[0])


def test_tied_embeddings_share_storage():
    model = GPT(tiny_config(tie_embeddings=True))
    assert model.lm_head.weight is model.wte.weight


def test_generate_crops_context():
    torch.manual_seed(10)
    model = GPT(tiny_config())
    out = model.generate(torch.zeros((1, 1), dtype=torch.long), max_new_tokens=50, temperature=0.8, top_k=5)
    assert out.shape == (1, 51)
    assert int(out.max()) < 50


def test_generate_top_k_one_is_greedy():
    torch.manual_seed(11)
    model = GPT(tiny_config())
    a = model.generate(torch.zeros((1, 1), dtype=torch.long), 10, top_k=1)
    b = model.generate(torch.zeros((1, 1), dtype=torch.long), 10, top_k=1)
    assert torch.equal(a, b)


def test_config_round_trip_and_old_checkpoints():
    config = tiny_config(rope_fraction=0.25, qk_norm=True, parallel_residual=True, arch="gpt2")
    assert GPTConfig.from_dict(config.to_dict()) == config
    old = config.to_dict()
    for newer in ("qk_norm", "parallel_residual", "arch", "pos_emb", "tie_embeddings"):
        old.pop(newer)
    restored = GPTConfig.from_dict(old)
    assert restored.qk_norm is False
    assert restored.arch == "llama"
    assert restored.pos_emb == "none"
    with pytest.raises(ValueError, match="unknown fields"):
        GPTConfig.from_dict({**config.to_dict(), "rotary_interleaved": True})


def test_rotary_module_rebuilds_after_dtype_round_trip():
    rotary = RotaryEmbedding(6, 16, 10000.0)
    rotary.to(torch.float16).to(torch.float32)
    want, _ = build_rope_cache(16, 6, 10000.0)
    assert torch.equal(rotary.cos, want)


# -----------------------------------------------------------------------------
# The hand-written backward of apply_rotary

def plain_ops_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Partial rotary through autograd-tracked slices and cat, in float32."""
    r = cos.shape[-1]
    x1, x2, x_pass = x[..., :r // 2].float(), x[..., r // 2:r].float(), x[..., r:]
    c, s = cos[..., :r // 2], sin[..., :r // 2]
    return torch.cat(((x1 * c - x2 * s).to(x.dtype), (x1 * s + x2 * c).to(x.dtype), x_pass), dim=-1)


@pytest.mark.parametrize("r", [2, 6, 32, 64])
def test_rotary_gradient_matches_autograd(r):
    torch.manual_seed(0)
    B, T, nh, hs = 2, 17, 3, 64
    base = torch.randn(B, T, 3 * nh * hs)
    cos, sin = build_rope_cache(T, r, 10000.0)
    grads = []
    for fn in (apply_rotary, plain_ops_rotary):
        qkv = base.clone().requires_grad_()
        q = qkv[..., :nh * hs].view(B, T, nh, hs).transpose(1, 2)  # strided, as in attention
        out = fn(q, cos, sin)
        out.backward(torch.linspace(-1, 1, out.numel()).view(out.shape))
        grads.append(qkv.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=0)
    # pass-through channels hand the incoming gradient on unchanged
    incoming = torch.linspace(-1, 1, B * nh * T * hs).view(B, nh, T, hs)
    got = grads[0][..., :nh * hs].view(B, T, nh, hs).transpose(1, 2)
    assert torch.equal(got[..., r:], incoming[..., r:])


def test_rotary_bf16_gradient_stays_bf16():
    x = torch.randn(1, 2, 8, 64, dtype=torch.bfloat16, requires_grad=True)
    cos, sin = build_rope_cache(8, 6, 10000.0)
    apply_rotary(x, cos, sin).sum().backward()
    assert x.grad.dtype == torch.bfloat16


def test_rotary_rejects_trainable_angles():
    cos, sin = build_rope_cache(8, 6, 10000.0)
    with pytest.raises(ValueError, match="no gradient for cos and sin"):
        apply_rotary(torch.randn(1, 1, 8, 64, requires_grad=True), cos.requires_grad_(), sin)
