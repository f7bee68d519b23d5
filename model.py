r"""
A small GPT with partial rotary position embedding (partial RoPE).

Read this file top to bottom as a tutorial; train it with train.py. A quick check:

    python -c "import model; print(model.rotary_dims(64, 0.1))"   # -> 6

Partial RoPE in one picture
---------------------------
RoPE encodes position by rotating pairs of query and key channels by an angle that grows with the
token's position. Partial RoPE rotates only the first r channels of every head and lets the rest
pass through untouched, so those channels carry content only. One head of head_dim = 64 at
rope_fraction = 0.1 (r = int(64 * 0.1) = 6, rounded down to an even number):

    channel:   0   1   2   3   4   5 | 6   7   8  ...  63
             [x1  x1  x1  x2  x2  x2]|[ pass-through ...]
              \_ rotated, r = 6 ___/  \_ 58 unchanged _/

    pairs (GPT-NeoX "rotate half"): (0, 3), (1, 4), (2, 5), i.e. channel i with i + r/2
    pair i turns by angle  pos * theta_i,  theta_i = base ** (-2i / r),  i = 0 .. r/2 - 1

Three details decide whether a reproduction matches the runs of "Fractional Rotation, Full
Potential? Investigating Performance and Convergence of Partial RoPE" (arXiv 2603.11611), which
used GPT-NeoX's partial RoPE:
1. The frequencies span the rotated width r, not head_dim, so even 6 channels get one fast pair
   (theta_0 = 1) and one slow pair (theta_2 = base ** (-4/6)).
2. Only q and k are rotated. v carries content and is never touched.
3. rope_fraction = 0 is NoPE: the model has no rotary module and no cos/sin cache at all; position
   reaches it only through the causal mask.

The cos/sin cache holds block_size x r values each for cos and sin (float32), so it shrinks by
head_dim / r compared with full RoPE: 64 / 6 = 10.7x at 10%.

QK-norm (optional) is an RMSNorm over each head's channels, applied to q and k before RoPE, which
bounds the attention logits and is the paper's other way to stabilise NoPE training.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Optional

import torch
import torch.nn as nn
from torch.nn import functional as F


# -----------------------------------------------------------------------------
# Configuration

@dataclass
class GPTConfig:
    """Model settings: shape, position handling and block style.

    Checkpoints store this as a dict. A field missing from an older checkpoint takes the default
    written here, so a new field's default must keep the behaviour of models trained before it.
    """
    block_size: int = 128          # training context length, in tokens
    vocab_size: int = 65
    n_layer: int = 4
    n_head: int = 2
    n_embd: int = 128
    rope_fraction: float = 1.0     # share of each head's channels that is rotated; 0 = NoPE
    rope_base: float = 10000.0
    qk_norm: bool = False          # RMSNorm on q and k per head, before RoPE
    parallel_residual: bool = False  # Pythia-style x + attn(n1(x)) + mlp(n2(x))
    arch: str = "llama"            # "llama": RMSNorm + SwiGLU; "gpt2": LayerNorm + GELU MLP (4x)
    pos_emb: str = "none"          # "none" or "learned" (absolute positions added to the input)
    tie_embeddings: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                             f"change --n_embd or --n_head so that head_dim is an integer")
        if self.arch not in ("llama", "gpt2"):
            raise ValueError(f"arch={self.arch!r} is invalid; use 'llama' or 'gpt2'")
        if self.pos_emb not in ("none", "learned"):
            raise ValueError(f"pos_emb={self.pos_emb!r} is invalid; use 'none' or 'learned'")
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if not (self.rope_base > 0 and math.isfinite(self.rope_base)):
            raise ValueError(f"rope_base={self.rope_base} must be a finite number > 0 (usually 10000)")
        rotary_dims(self.head_dim, self.rope_fraction)  # validates the fraction

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def rope_dims(self) -> int:
        return rotary_dims(self.head_dim, self.rope_fraction)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "GPTConfig":
        """Build a config from a checkpoint's dict; unknown keys raise, missing ones take defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"checkpoint model settings contain unknown fields {unknown}; "
                             f"it was written by a newer model.py")
        return cls(**values)


def rotary_dims(head_dim: int, rope_fraction: float) -> int:
    """Return r, the number of rotated channels per head: int(head_dim * rope_fraction), made even.

    This is GPT-NeoX's rule (plain int(), so 64 * 0.1 = 6.4 gives 6). Raises ValueError for a
    fraction outside [0, 1], NaN, or a fraction > 0 too small to rotate even one pair.
    """
    if isinstance(rope_fraction, bool) or not isinstance(rope_fraction, (int, float)):
        raise ValueError(f"rope_fraction={rope_fraction!r} must be a number in [0, 1]")
    if math.isnan(rope_fraction) or not 0.0 <= rope_fraction <= 1.0:
        raise ValueError(f"rope_fraction={rope_fraction} is outside [0, 1]; "
                         f"use 0 for NoPE, 1 for full RoPE or a value in between")
    r = int(head_dim * rope_fraction)
    r -= r % 2  # channels rotate in pairs
    if rope_fraction > 0 and r == 0:
        raise ValueError(f"rope_fraction={rope_fraction} rotates 0 of head_dim={head_dim} channels; "
                         f"the smallest fraction that rotates 2 channels is 2/{head_dim} = "
                         f"{2 / head_dim:.6g}, or use 0 for NoPE")
    return r


# -----------------------------------------------------------------------------
# Rotary position embedding

def build_rope_cache(seq_len: int, rope_dims: int, base: float,
                     device: Optional[torch.device] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (cos, sin), each (seq_len, rope_dims) float32, for positions 0 .. seq_len - 1.

    The angles pos * theta_i are computed in float64 and only the final cos/sin are cast to
    float32: in float32 an angle near 1000 already loses about 1e-4 radians.
    """
    inv_freq = base ** (-torch.arange(0, rope_dims, 2, dtype=torch.float64, device=device) / rope_dims)
    positions = torch.arange(seq_len, dtype=torch.float64, device=device)
    angles = torch.outer(positions, inv_freq)    # (T, r/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, r): channel i and i + r/2 share an angle
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first r channels of x, r = cos.shape[-1], and pass the rest through.

    In plain tensor ops, with x1, x2 the two halves of the rotated slice x[..., :r]:

        rotated = cat(x1 * cos - x2 * sin, x2 * cos + x1 * sin)   # pair (i, i + r/2) turns by its angle
        output  = cat(rotated, x[..., r:])                        # pass-through channels unchanged

    _PartialRotary computes exactly this with fewer temporaries and a hand-written backward.
    NOTE: on a 2-core CPU this still adds about 4-5% to a CPU-preset training step over NoPE, at
    any r, mostly the full copy of q and k that an out-of-place rotation writes (assets/benchmark.md).

    Args:
        x: queries or keys, (B, nh, T, hs), any float dtype.
        cos, sin: (T, r) float32 from build_rope_cache, without requires_grad.
    Returns:
        A new contiguous tensor like x. The rotation runs in float32 (float64 for float64 input) and
        is cast back to x.dtype. The pass-through channels are the input's own values, bit for bit.
    """
    return _PartialRotary.apply(x, cos, sin)


def _rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: float) -> torch.Tensor:
    """Turn channel pair (i, i + r/2) of x by +angle (sign=1) or -angle (sign=-1); copy the rest."""
    r = cos.shape[-1]
    half = r // 2
    out = x.clone(memory_format=torch.contiguous_format)  # pass-through channels: an exact copy
    # Read the rotated channels from the dense copy: elementwise ops over q and k themselves,
    # transposed views of the qkv projection, run several times slower on CPU.
    x_rot = out[..., :r]
    y = x_rot * cos  # float32 (cos is float32), or float64 for float64 input
    y[..., :half].addcmul_(x_rot[..., half:], sin[..., :half], value=-sign)  # x1 cos - x2 sin
    y[..., half:].addcmul_(x_rot[..., :half], sin[..., half:], value=sign)   # x2 cos + x1 sin
    out[..., :r] = y  # cast back to x.dtype
    return out


class _PartialRotary(torch.autograd.Function):
    """apply_rotary with its backward pass written out.

    A rotation's transpose is the rotation by the opposite angle, so the gradient of the rotated
    channels is the incoming gradient turned by -angle, and the pass-through channels pass it on
    unchanged. Autograd through the slices of x would instead allocate a zero-filled gradient of
    x's full size per slice and run its arithmetic on strided views.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            raise ValueError("apply_rotary computes no gradient for cos and sin; pass them without "
                             "requires_grad, as build_rope_cache returns them")
        ctx.save_for_backward(cos, sin)
        return _rotate_pairs(x, cos, sin, sign=1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        return _rotate_pairs(grad, cos, sin, sign=-1.0), None, None


class RotaryEmbedding(nn.Module):
    """Holds the cos/sin cache for block_size positions and the r rotated channels.

    The cache is a non-persistent float32 buffer: it is rebuilt from the config, never saved,
    and stays float32 even after model.to(torch.bfloat16), so bf16 runs keep angle precision.
    """

    def __init__(self, rope_dims: int, block_size: int, base: float):
        super().__init__()
        self.rope_dims, self.base = rope_dims, base
        cos, sin = build_rope_cache(block_size, rope_dims, base)
        self.register_buffer("cos", cos, persistent=False)  # (block_size, r)
        self.register_buffer("sin", sin, persistent=False)

    def _apply(self, fn, recurse=True):
        # Module.to(dtype) casts every float buffer. Rebuild a cast cache from float64 angles
        # instead of keeping bf16/fp16 cos/sin values.
        super()._apply(fn, recurse)
        if self.cos.dtype != torch.float32:
            self.cos, self.sin = build_rope_cache(self.cos.shape[0], self.rope_dims, self.base,
                                                  device=self.cos.device)
        return self

    def cos_sin(self, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (cos, sin) for positions 0 .. seq_len - 1, computing positions past the cache."""
        if seq_len <= self.cos.shape[0]:
            return self.cos[:seq_len], self.sin[:seq_len]
        # Long-context evaluation: new positions are computed, never wrapped or clamped.
        return build_rope_cache(seq_len, self.rope_dims, self.base, device=self.cos.device)

    def cache_bytes(self) -> int:
        return self.cos.numel() * self.cos.element_size() + self.sin.numel() * self.sin.element_size()


# -----------------------------------------------------------------------------
# Transformer block

class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain and no bias (the Llama norm)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def make_norm(config: GPTConfig, dim: int) -> nn.Module:
    # GPT-2 uses LayerNorm; nanoGPT's bias-free variant keeps the whole model free of biases.
    return nn.LayerNorm(dim, bias=False) if config.arch == "gpt2" else RMSNorm(dim)


class CausalSelfAttention(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)  # q, k, v together
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.q_norm = RMSNorm(config.head_dim) if config.qk_norm else None
        self.k_norm = RMSNorm(config.head_dim) if config.qk_norm else None

    def forward(self, x: torch.Tensor, rope: Optional[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)

        # QK-norm first, so RoPE rotates unit-scale vectors and rotation keeps their norm.
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)

        # Partial RoPE on q and k only; v is never rotated. rope is None for NoPE.
        if rope is not None:
            cos, sin = rope
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


def swiglu_hidden(n_embd: int) -> int:
    """Return the SwiGLU hidden width: 2/3 of 4 * n_embd (same parameters as a 4x MLP), rounded up to 64."""
    return 64 * math.ceil(8 * n_embd / 3 / 64)


class MLP(nn.Module):
    """SwiGLU for the Llama-style block, or GELU with a 4x hidden width for the GPT-2 style."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.swiglu = config.arch == "llama"
        hidden = swiglu_hidden(config.n_embd) if self.swiglu else 4 * config.n_embd
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden if self.swiglu else hidden, bias=False)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            gate, up = self.c_fc(x).chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(self.c_fc(x))
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    """Pre-norm transformer block, sequential (Llama, GPT-2) or parallel (Pythia / GPT-NeoX)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.parallel_residual = config.parallel_residual
        self.ln_1 = make_norm(config, config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config, config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, rope: Optional[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        if self.parallel_residual:
            # attention and MLP both read the block's input, each through its own norm
            return x + self.attn(self.ln_1(x), rope) + self.mlp(self.ln_2(x))
        x = x + self.attn(self.ln_1(x), rope)
        return x + self.mlp(self.ln_2(x))


# -----------------------------------------------------------------------------
# The model

class GPT(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.pos_emb == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        # NoPE builds no rotary module, so no cos/sin cache exists and no rotary code runs.
        r = config.rope_dims
        self.rotary = RotaryEmbedding(r, config.block_size, config.rope_base) if r > 0 else None
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = make_norm(config, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight

        # GPT-2 init: N(0, 0.02), and residual projections scaled by 1/sqrt(2 * n_layer) so the
        # residual stream's variance does not grow with depth. Parameters are created and
        # initialised in the same order for every rope_fraction and qk_norm, so one seed gives
        # one set of initial weights across a sweep.
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        """Count parameters once each (tied weights count once)."""
        return sum(p.numel() for p in self.parameters())

    def rope_cache_bytes(self) -> int:
        """Return the bytes of this model's cos/sin cache (0 for NoPE)."""
        return self.rotary.cache_bytes() if self.rotary is not None else 0

    def full_rope_cache_bytes(self) -> int:
        """Return the bytes a full-RoPE cos/sin cache (all head_dim channels, float32) would take."""
        return 2 * self.config.block_size * self.config.head_dim * 4

    def forward(self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None,
                allow_long_context: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Return (logits, loss); loss is None without targets.

        Args:
            idx: token ids, (B, T), T <= block_size.
            targets: next-token ids, (B, T), or None.
            allow_long_context: accept T > block_size for long-context evaluation: RoPE computes
                the extra positions and NoPE needs none. Learned position embeddings cannot.
        """
        B, T = idx.size()
        if T > self.config.block_size:
            if not allow_long_context:
                raise ValueError(f"sequence length {T} exceeds block_size={self.config.block_size}; "
                                 f"crop the input, or pass allow_long_context=True to evaluate beyond "
                                 f"the training context")
            if self.wpe is not None:
                raise ValueError(f"sequence length {T} exceeds block_size={self.config.block_size}, and "
                                 f"learned position embeddings cannot extrapolate past the positions "
                                 f"they were trained on")

        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        x = self.drop(x)
        rope = self.rotary.cos_sin(T) if self.rotary is not None else None
        for block in self.blocks:
            x = block(x, rope)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab_size)

        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None) -> torch.Tensor:
        """Sample max_new_tokens tokens after idx, (B, T), feeding back at most block_size tokens.

        Args:
            temperature: > 0; lower is more conservative.
            top_k: sample only among the k most likely tokens, or all when None.
        """
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.config.block_size:]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :].float() / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                logits[logits < kth] = -float("inf")
            next_id = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)
            idx = torch.cat((idx, next_id), dim=1)
        return idx

    def configure_optimizer(self, lr: float, weight_decay: float, betas: tuple[float, float],
                            device_type: str) -> torch.optim.AdamW:
        """Return AdamW that decays only matrices (linear and embedding weights), not norm gains."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        fused = device_type == "cuda"
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)
