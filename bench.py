"""
Measure what each rope fraction costs: training step time, tokens/s, peak memory and cos/sin table
bytes, the rotary function alone, and our GPT-2 style model against a plain PyTorch GPT.

    python bench.py --quick                          # every code path, under a minute on 2 CPU cores
    python bench.py                                  # the full CPU measurement, 1-2 minutes
    python bench.py --preset gpu --device cuda       # CUDA events, MFU, torch.compile on and off
    python bench.py --configs rope0.00 rope1.00 --repeats 100   # re-measure one comparison

Method. Every configuration is built once, warmed up, and then timed round-robin: each repeat runs
one training step of every configuration, in an order shuffled per repeat with --seed, so a slow
spell of a shared machine lands on all of them. A step is the one train.py runs: forward and loss
under the training dtype, backward, gradient clipping, AdamW step and zero_grad, on the model and
optimizer from model.py and the preset's batch and block size, with random token ids. Figures are
medians over the repeats with the interquartile range (IQR). The overhead against a baseline is the
median of the per-repeat ratios of the two steps timed in the same round, with a bootstrap 95%
confidence interval (CI). Step memory is measured on one extra step after the timings.

Output: one key=value line per measurement (bench=train, bench=rotary, bench=target), a table, and
the same numbers in JSON (--out, default bench.json) with a header that holds the settings, library
versions, device, thread counts and load average needed to reproduce the run.

Exit codes: 0 finished (whatever the target verdicts), 1 invalid settings or a failed measurement.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn as nn
from torch.nn import functional as F

from model import GPT, GPTConfig, apply_rotary, build_rope_cache, rotary_dims
from train import PRESETS, RunError, git_commit, library_versions, pick_dtype

QUICK_REPEATS, QUICK_WARMUP = 5, 1
FULL_REPEATS, FULL_WARMUP = 30, 3
BOOTSTRAP_RESAMPLES = 2000
# Training hyperparameters do not change the cost of a step. These match train.py's defaults.
WEIGHT_DECAY, BETAS, GRAD_CLIP = 0.1, (0.9, 0.95), 1.0
# Timed calls of the rotary function are grouped so one timing lasts at least this long.
ROTARY_MIN_TIMING_S = {"cpu": 0.02, "cuda": 0.002}

# Dense (no 2:4 sparsity) bf16 tensor-core peaks in TFLOPS, matched as substrings of the upper-cased
# torch.cuda.get_device_name(). The H100 rows are NVIDIA's published figures with sparsity (1979 SXM,
# 1513 PCIe) halved. The H200 (and GH200) has the H100 SXM's compute, and the A100 peak is 312, the
# figure nanoGPT's estimate_mfu uses. The first matching row wins, so specific names come first.
# NVL boards have other peaks that this table does not list, so they stay unknown.
BF16_DENSE_PEAK_TFLOPS: list[tuple[tuple[str, ...], Optional[float]]] = [
    (("NVL",), None),
    (("H100", "PCIE"), 756.0),
    (("H100",), 989.0),
    (("H200",), 989.0),
    (("A100",), 312.0),
]

FLOPS_FORMULA = ("flops_per_token = 6 * N + 12 * n_layer * n_embd * block_size, where N counts the "
                 "weights of nn.Linear layers (lm_head included, embedding lookups excluded). 6N is the "
                 "forward (2N) and backward (4N) matmul work. 12 * L * C * T is QK^T and attention x V "
                 "over the full T x T score matrix, forward and backward, as in nanoGPT's estimate_mfu, "
                 "which cites PaLM (arXiv 2204.02311) appendix B. Causal kernels skip about half of the "
                 "attention term. Norms, rotary and the optimizer are not counted.")


class BenchError(Exception):
    """Invalid settings or a failed measurement. main() prints the message and exits with status 1."""


# -----------------------------------------------------------------------------
# Configurations

@dataclass(frozen=True)
class Spec:
    """One measured configuration: a model, its position handling and whether it is compiled."""
    name: str
    rope_fraction: float = 0.0
    qk_norm: bool = False
    arch: str = "llama"
    pos_emb: str = "none"
    plain: bool = False         # the PlainGPT reference below instead of model.GPT
    baseline: str = "rope0.00"  # the configuration this one's overhead is measured against
    compile: bool = False

    @property
    def label(self) -> str:
        return self.name + ("+compile" if self.compile else "")


def all_specs(head_dim: int) -> list[Spec]:
    """Return every configuration in table order, all eager. The 2-channel fraction is 2 / head_dim."""
    two_channels = 2 / head_dim
    return [
        Spec("rope0.00", 0.0),
        Spec("rope2ch", two_channels),
        Spec("rope0.10", 0.1),
        Spec("rope0.25", 0.25),
        Spec("rope0.50", 0.5),
        Spec("rope1.00", 1.0),
        Spec("rope0.00-qknorm", 0.0, qk_norm=True),
        Spec("rope0.10-qknorm", 0.1, qk_norm=True),
        Spec("rope0.00-gpt2-learnedpos", 0.0, arch="gpt2", pos_emb="learned", baseline="plain-gpt2"),
        Spec("plain-gpt2", plain=True, baseline="plain-gpt2"),
    ]


SPEC_NAMES = [s.name for s in all_specs(64)]


# -----------------------------------------------------------------------------
# A plain PyTorch GPT for comparison

class PlainBlock(nn.Module):
    """GPT-2 block: pre-LayerNorm attention through scaled_dot_product_attention, then a 4x GELU MLP."""

    def __init__(self, n_embd: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.norm_attn = nn.LayerNorm(n_embd, bias=False)
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)
        self.attn_out = nn.Linear(n_embd, n_embd, bias=False)
        self.norm_mlp = nn.LayerNorm(n_embd, bias=False)
        self.mlp_in = nn.Linear(n_embd, 4 * n_embd, bias=False)
        self.mlp_out = nn.Linear(4 * n_embd, n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv(self.norm_attn(x)).view(B, T, 3, self.n_head, C // self.n_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_out(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp_out(F.gelu(self.mlp_in(self.norm_mlp(x))))


class PlainGPT(nn.Module):
    """GPT-2 layout with learned positions and no rotary code, written without model.py.

    Linear layers and LayerNorms have no biases, so the parameter count equals that of
    GPT(arch="gpt2", pos_emb="learned", rope_fraction=0) at the same size. check_equal_size()
    verifies that before any timing.
    """

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int):
        super().__init__()
        self.token_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.layers = nn.ModuleList([PlainBlock(n_embd, n_head) for _ in range(n_layer)])
        self.norm = nn.LayerNorm(n_embd, bias=False)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.token_emb(idx) + self.pos_emb(torch.arange(idx.shape[1], device=idx.device))
        for layer in self.layers:
            x = layer(x)
        logits = self.head(self.norm(x))
        return logits, F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def plain_optimizer(model: nn.Module, lr: float, device_type: str) -> torch.optim.AdamW:
    """Return AdamW grouped as GPT.configure_optimizer groups it: decay on matrices, none on norm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=BETAS, fused=device_type == "cuda")


# -----------------------------------------------------------------------------
# One configuration's training step

@dataclass
class Shape:
    """Model size, RoPE base and batch size shared by every configuration."""
    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    batch_size: int
    grad_accum: int
    rope_base: float = GPTConfig.rope_base

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.block_size


class TrainCase:
    """A built model, its optimizer and a fixed batch. step() runs one training step as train.py does."""

    def __init__(self, spec: Spec, shape: Shape, batches: list[tuple[torch.Tensor, torch.Tensor]],
                 device: str, dtype: str, lr: float, seed: int, compile_backend: str):
        self.spec, self.batches = spec, batches
        device_type = "cuda" if device.startswith("cuda") else "cpu"
        torch.manual_seed(seed)
        if spec.plain:
            model: nn.Module = PlainGPT(shape.vocab_size, shape.block_size, shape.n_layer,
                                        shape.n_head, shape.n_embd).to(device)
            self.optimizer = plain_optimizer(model, lr, device_type)
        else:
            config = GPTConfig(vocab_size=shape.vocab_size, block_size=shape.block_size,
                               n_layer=shape.n_layer, n_head=shape.n_head, n_embd=shape.n_embd,
                               rope_fraction=spec.rope_fraction, rope_base=shape.rope_base,
                               qk_norm=spec.qk_norm, arch=spec.arch, pos_emb=spec.pos_emb)
            model = GPT(config).to(device)
            self.optimizer = model.configure_optimizer(lr, WEIGHT_DECAY, BETAS, device_type)
        self.raw_model = model
        self.model = torch.compile(model, backend=compile_backend) if spec.compile else model
        self.autocast = (torch.autocast(device_type, dtype=getattr(torch, dtype))
                         if dtype != "float32" else nullcontext())
        self.scaler = torch.amp.GradScaler(device_type, enabled=dtype == "float16")

    def step(self) -> None:
        """Run forward, backward, clip, AdamW step and zero_grad, with train.py's two host syncs (.item())."""
        loss_sum = 0.0
        for x, y in self.batches:
            with self.autocast:
                _, loss = self.model(x, y)
                loss = loss / len(self.batches)
            self.scaler.scale(loss).backward()
            loss_sum += loss.item()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), GRAD_CLIP).item()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def num_params(self) -> int:
        return self.raw_model.num_params()

    def rope_dims(self) -> int:
        rotary = getattr(self.raw_model, "rotary", None)
        return rotary.rope_dims if rotary is not None else 0

    def cos_sin_bytes(self) -> int:
        """Return the bytes of the cos and sin buffers, read from the tensors (0 without a rotary module)."""
        rotary = getattr(self.raw_model, "rotary", None)
        if rotary is None:
            return 0
        return sum(t.numel() * t.element_size() for t in (rotary.cos, rotary.sin))

    def linear_weights(self) -> int:
        """Return the number of weights in all nn.Linear layers, the N of the FLOPs formula."""
        return sum(m.weight.numel() for m in self.raw_model.modules() if isinstance(m, nn.Linear))

    def state_bytes(self) -> int:
        """Return the bytes kept between steps: parameters, buffers and AdamW state."""
        tensors = list(self.raw_model.parameters()) + list(self.raw_model.buffers())
        for state in self.optimizer.state.values():
            tensors += [t for t in state.values() if isinstance(t, torch.Tensor)]
        storages = {}
        for t in tensors:  # tied weights share a storage and count once
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return sum(storages.values())


# -----------------------------------------------------------------------------
# Timing and memory

def make_timer(device: str) -> Callable[[Callable[[], None]], float]:
    """Return timer(fn) -> seconds: CUDA events around fn on CUDA, time.perf_counter on CPU."""
    # NOTE: the CUDA paths (this timer, cuda_step_peak_bytes, MFU, torch.compile on CUDA) were written
    # without a GPU at hand and have not been run yet.
    if device.startswith("cuda"):
        def cuda_timer(fn: Callable[[], None]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)  # the previous configuration's work must not leak in
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        return cuda_timer

    def cpu_timer(fn: Callable[[], None]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return cpu_timer


def interleaved_timings(functions: dict[str, Callable[[], None]], repeats: int, rng: random.Random,
                        timer: Callable[[Callable[[], None]], float]) -> dict[str, list[float]]:
    """Time each function once per repeat, in an order shuffled anew for each repeat.

    Entry i of every returned list comes from repeat i, so lists can be compared pairwise.
    """
    timings: dict[str, list[float]] = {name: [] for name in functions}
    gc.collect()
    gc.disable()  # a collection inside a timing would land on one configuration at random
    try:
        for _ in range(repeats):
            order = list(functions)
            rng.shuffle(order)
            for name in order:
                timings[name].append(timer(functions[name]))
    finally:
        gc.enable()
    return timings


def cuda_step_peak_bytes(case: TrainCase, device: str) -> int:
    """Return the peak bytes allocated on the GPU during one step above those allocated before it."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    case.step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def cpu_step_peak_bytes(case: TrainCase) -> Optional[int]:
    """Return the peak bytes allocated during one step above those allocated before it, or None.

    The profiler records every allocation and free of PyTorch's CPU allocator during the step, and
    the peak is the maximum of their running sum. Memory that oneDNN or other libraries allocate
    outside that allocator is not seen. The event tree is a private profiler API, so a PyTorch
    version without it gives None instead of an error.
    """
    from torch.profiler import ProfilerActivity, profile
    try:
        from torch._C._profiler import _EventType
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            case.step()
        roots = prof.profiler.kineto_results.experimental_event_tree()
    except (ImportError, AttributeError, RuntimeError) as e:
        print(f"bench=warning message=\"CPU memory not measured: {type(e).__name__}: {e}\"", flush=True)
        return None
    allocations = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            allocations.append((node.start_time_ns, node.extra_fields.alloc_size))  # frees are negative
        stack.extend(node.children)
    allocations.sort(key=lambda event: event[0])
    live = peak = 0
    for _, size in allocations:
        live += size
        peak = max(peak, live)
    return peak


# -----------------------------------------------------------------------------
# Statistics

def quartiles(values: list[float]) -> tuple[float, float, float]:
    """Return (25th percentile, median, 75th percentile), or one value three times."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def bootstrap_median_ci(values: list[float], rng: random.Random,
                        resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """Return the 95% percentile-bootstrap confidence interval of the median of values."""
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def paired_overhead(times: list[float], base_times: list[float], rng: random.Random) -> dict:
    """Return the overhead in percent of times over base_times, from the per-repeat ratios."""
    ratios = [t / b for t, b in zip(times, base_times)]
    q1, median, q3 = quartiles(ratios)
    low, high = bootstrap_median_ci(ratios, rng)
    return {"overhead_pct": 100 * (median - 1), "overhead_pct_q1": 100 * (q1 - 1),
            "overhead_pct_q3": 100 * (q3 - 1), "overhead_pct_ci95": [100 * (low - 1), 100 * (high - 1)]}


# -----------------------------------------------------------------------------
# FLOPs and the device's peak

def flops_per_token(linear_weights: int, shape: Shape) -> int:
    return 6 * linear_weights + 12 * shape.n_layer * shape.n_embd * shape.block_size


def lookup_peak_tflops(device_name: str) -> Optional[float]:
    """Return the dense bf16 peak for a device name from BF16_DENSE_PEAK_TFLOPS, or None if unknown."""
    name = device_name.upper()
    for parts, peak in BF16_DENSE_PEAK_TFLOPS:
        if all(part in name for part in parts):
            return peak
    return None


# -----------------------------------------------------------------------------
# The rotary function alone

def strided_q_and_k(shape: Shape, device: str, dtype: torch.dtype,
                    requires_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Return q and k, (B, nh, T, hs), as the strided views of a qkv projection that attention rotates."""
    B, T, C, nh = shape.batch_size, shape.block_size, shape.n_embd, shape.n_head
    qkv = torch.randn(B, T, 3 * C, device=device, dtype=dtype, requires_grad=requires_grad)
    q, k, _ = qkv.split(C, dim=2)
    return q.view(B, T, nh, C // nh).transpose(1, 2), k.view(B, T, nh, C // nh).transpose(1, 2)


def rotary_functions(inputs: dict[str, tuple[torch.Tensor, torch.Tensor]], cos: torch.Tensor,
                     sin: torch.Tensor) -> dict[str, Callable[[], None]]:
    """Return {"fwd": ..., "fwd_bwd": ...}, two functions that each rotate q and k once.

    inputs["fwd"] and inputs["fwd_bwd"] hold q and k from strided_q_and_k, the latter with
    requires_grad. The backward pass stops at q and k (torch.autograd.grad), so it times
    apply_rotary's backward and not the gradient of the projection that q and k are sliced from.
    """
    q_plain, k_plain = inputs["fwd"]
    q, k = inputs["fwd_bwd"]
    grad_out = torch.ones_like(q, memory_format=torch.contiguous_format)

    def forward() -> None:
        apply_rotary(q_plain, cos, sin)
        apply_rotary(k_plain, cos, sin)

    def forward_backward() -> None:
        outputs = (apply_rotary(q, cos, sin), apply_rotary(k, cos, sin))
        torch.autograd.grad(outputs, (q, k), (grad_out, grad_out))

    return {"fwd": forward, "fwd_bwd": forward_backward}


def repeat_call(fn: Callable[[], None], count: int) -> Callable[[], None]:
    def repeated() -> None:
        for _ in range(count):
            fn()
    return repeated


# -----------------------------------------------------------------------------
# Command line and environment

def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="model size, batch size and block size from train.py's presets (default: cpu)")
    p.add_argument("--device", default="auto",
                   help="auto (cuda if available, else cpu), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="training dtype as in train.py: auto is bfloat16 autocast on CUDA where "
                        "supported, else float16, and float32 on CPU (default: auto)")
    p.add_argument("--quick", action="store_true",
                   help=f"run every code path with {QUICK_REPEATS} repeats and {QUICK_WARMUP} warm-up step "
                        f"unless --repeats or --warmup is given, too few to judge the targets")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"timed rounds, each timing one step of every configuration "
                        f"(default: {FULL_REPEATS}, {QUICK_REPEATS} with --quick)")
    p.add_argument("--warmup", type=int, default=None,
                   help=f"untimed steps per configuration before timing, and untimed rotary calls "
                        f"(default: {FULL_WARMUP}, {QUICK_WARMUP} with --quick)")
    p.add_argument("--configs", nargs="+", choices=SPEC_NAMES, default=None, metavar="NAME",
                   help="measure only these configurations, plus the baselines they are compared "
                        "with (default: all of " + " ".join(SPEC_NAMES) + ")")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also measure every configuration under torch.compile, or with --no-compile "
                        "measure eager models only (default: on for CUDA, off on CPU)")
    p.add_argument("--compile_backend", default="inductor",
                   help="torch.compile backend, where 'eager' traces without generating code "
                        "(default: inductor)")
    p.add_argument("--peak_tflops", type=float, default=None,
                   help="the device's dense bf16 peak in TFLOPS for MFU (default: looked up by CUDA "
                        "device name; MFU is left out when the device is unknown)")
    p.add_argument("--batch_size", type=int, default=None, help="sequences per micro-batch (default: the preset's)")
    p.add_argument("--block_size", type=int, default=None, help="tokens per sequence (default: the preset's)")
    p.add_argument("--vocab_size", type=int, default=65,
                   help="vocabulary size, 65 being the shakespeare_char alphabet (default: 65)")
    p.add_argument("--rope_base", type=float, default=GPTConfig.rope_base,
                   help=f"RoPE base (default: {GPTConfig.rope_base:g})")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op CPU threads (default: PyTorch's choice, recorded in the JSON)")
    p.add_argument("--seed", type=int, default=1337,
                   help="seed for weights, token ids, run order and bootstrap resampling (default: 1337)")
    p.add_argument("--out", default="bench.json", help="JSON output path (default: bench.json)")
    args = p.parse_args(argv)

    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else FULL_REPEATS
    if args.warmup is None:
        args.warmup = QUICK_WARMUP if args.quick else FULL_WARMUP
    preset = PRESETS[args.preset]
    if args.batch_size is None:
        args.batch_size = preset["batch_size"]
    if args.block_size is None:
        args.block_size = preset["block_size"]
    for key in ("repeats", "batch_size", "block_size", "vocab_size"):
        if getattr(args, key) < 1:
            raise BenchError(f"--{key} {getattr(args, key)} is invalid; it must be at least 1")
    if args.warmup < 0:
        raise BenchError(f"--warmup {args.warmup} is invalid; it must be 0 or more")
    if args.threads is not None and args.threads < 1:
        raise BenchError(f"--threads {args.threads} is invalid; it must be at least 1")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        raise BenchError(f"--peak_tflops {args.peak_tflops} is invalid; give the peak in TFLOPS, > 0")
    return args


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "cuda" or requested.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise BenchError(f"--device {requested} requested but CUDA is not available; use --device cpu")
        return requested
    raise BenchError(f"--device {requested} is invalid; use auto, cpu, cuda or cuda:N")


def selected_specs(args: argparse.Namespace, head_dim: int, device_type: str) -> list[Spec]:
    """Return the configurations to measure: --configs plus their baselines, eager and compiled."""
    specs = all_specs(head_dim)
    if args.configs is not None:
        requested = set(args.configs)
        requested |= {s.baseline for s in specs if s.name in requested}
        specs = [s for s in specs if s.name in requested]
    if args.compile if args.compile is not None else device_type == "cuda":
        specs += [replace(s, compile=True) for s in specs]
    return specs


def cpu_model_name() -> Optional[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def load_average() -> Optional[list[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def device_info(device: str, dtype: str, peak_override: Optional[float]) -> dict:
    """Describe the device, the timer and the peak that MFU divides by."""
    info = {"device": device, "dtype": dtype, "cuda_available": torch.cuda.is_available(),
            "cuda_timings": device.startswith("cuda"),
            "timer": "torch.cuda.Event" if device.startswith("cuda") else "time.perf_counter",
            "name": cpu_model_name(), "peak_tflops": peak_override,
            "peak_source": "--peak_tflops" if peak_override is not None else "unknown"}
    if device.startswith("cuda"):
        info["name"] = torch.cuda.get_device_name(device)
        info["capability"] = list(torch.cuda.get_device_capability(device))
        info["cuda_version"] = torch.version.cuda
        info["allow_tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        if peak_override is None:
            peak = lookup_peak_tflops(info["name"])
            if peak is not None and dtype == "bfloat16":
                info["peak_tflops"], info["peak_source"] = peak, "BF16_DENSE_PEAK_TFLOPS in bench.py"
            elif peak is not None:
                info["peak_source"] = f"unknown: the table holds bf16 peaks and the dtype is {dtype}"
    return info


def thread_info() -> dict:
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(), "env": env,
            "mkldnn": torch.backends.mkldnn.is_available()}


def raise_recompile_limit(count: int) -> None:
    """Let dynamo keep one compiled graph per configuration instead of falling back to eager.

    The configurations share GPT.forward's code, and dynamo compiles that code at most
    recompile_limit times (8 by default) before it runs it eagerly without saying so in the output.
    """
    import torch._dynamo
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 2 * count))


# -----------------------------------------------------------------------------
# Measurement

def measure_training(args: argparse.Namespace, specs: list[Spec], shape: Shape, device: str, dtype: str,
                     lr: float, rng: random.Random) -> tuple[dict[str, TrainCase], dict[str, list[float]], dict]:
    """Build, warm up and time every configuration; return the cases, their timings and first-step seconds."""
    generator = torch.Generator().manual_seed(args.seed)
    batches = []
    for _ in range(shape.grad_accum):
        ids = torch.randint(0, shape.vocab_size, (shape.batch_size, shape.block_size + 1), generator=generator)
        batches.append((ids[:, :-1].contiguous().to(device), ids[:, 1:].contiguous().to(device)))
    timer = make_timer(device)

    cases: dict[str, TrainCase] = {}
    first_step_s: dict[str, float] = {}
    for spec in specs:
        case = TrainCase(spec, shape, batches, device, dtype, lr, args.seed, args.compile_backend)
        try:
            first_step_s[spec.label] = timer(case.step)  # includes compilation and lazy initialisation
            for _ in range(max(0, args.warmup - 1)):
                case.step()
        except Exception as e:  # torch.compile raises many backend-specific error types
            message = str(e).splitlines()[0] if str(e) else ""
            hint = "; pass --no-compile to measure eager models only" if spec.compile else ""
            raise BenchError(f"the first steps of {spec.label} failed ({type(e).__name__}: {message}){hint}") from e
        cases[spec.label] = case
        print(f"bench=built config={spec.label} params={case.num_params()} first_step_s={first_step_s[spec.label]:.3f}",
              flush=True)

    check_equal_size(cases)
    timings = interleaved_timings({label: case.step for label, case in cases.items()}, args.repeats, rng, timer)
    return cases, timings, first_step_s


def check_equal_size(cases: dict[str, TrainCase]) -> None:
    """Raise BenchError unless PlainGPT and the GPT-2 style model.GPT have the same parameter count."""
    ours = next((c for c in cases.values() if c.spec.name == "rope0.00-gpt2-learnedpos"), None)
    plain = next((c for c in cases.values() if c.spec.plain), None)
    if ours is None or plain is None:
        return
    print(f"bench=size model.GPT_gpt2_learnedpos={ours.num_params()} PlainGPT={plain.num_params()}", flush=True)
    if ours.num_params() != plain.num_params():
        raise BenchError(f"PlainGPT has {plain.num_params()} parameters and model.GPT (gpt2, learned positions) "
                         f"{ours.num_params()}; the comparison needs equal sizes")


def measure_memory(case: TrainCase, device: str) -> dict:
    """Run one more step and return the state, step-peak and total peak bytes, with the method used."""
    if device.startswith("cuda"):
        step_peak: Optional[int] = cuda_step_peak_bytes(case, device)
        method = ("parameters, buffers and AdamW state, plus torch.cuda.max_memory_allocated during one "
                  "step minus torch.cuda.memory_allocated before it")
    else:
        step_peak = cpu_step_peak_bytes(case)
        method = ("parameters, buffers and AdamW state, plus the peak of the running sum of PyTorch CPU "
                  "allocator allocations and frees during one step (torch.profiler, profile_memory=True). "
                  "Memory allocated outside PyTorch's allocator, such as oneDNN scratch space, is not counted.")
    state = case.state_bytes()
    return {"state_bytes": state, "step_peak_bytes": step_peak,
            "peak_bytes": state + step_peak if step_peak is not None else None, "memory_method": method}


def summarize_training(specs: list[Spec], cases: dict[str, TrainCase], timings: dict[str, list[float]],
                       first_step_s: dict[str, float], shape: Shape, device_meta: dict, device: str,
                       rng: random.Random) -> list[dict]:
    """Return one result row per configuration: timings, throughput, overhead, FLOPs, MFU and memory."""
    rows = []
    full_bytes = full_table_bytes(cases, shape)
    for spec in specs:
        case, times = cases[spec.label], timings[spec.label]
        q1, median, q3 = quartiles(times)
        row = {"config": spec.name, "label": spec.label, "compile": spec.compile,
               "rope_fraction": spec.rope_fraction, "rope_dims": case.rope_dims(), "head_dim": shape.head_dim,
               "qk_norm": spec.qk_norm, "arch": spec.arch, "pos_emb": spec.pos_emb,
               "model": "PlainGPT (bench.py)" if spec.plain else "model.GPT",
               "num_params": case.num_params(), "baseline": spec.baseline,
               "step_ms": 1000 * median, "step_ms_q1": 1000 * q1, "step_ms_q3": 1000 * q3,
               "step_ms_min": 1000 * min(times), "step_ms_max": 1000 * max(times),
               "step_ms_all": [round(1000 * t, 4) for t in times], "first_step_s": first_step_s[spec.label],
               "tokens_per_step": shape.tokens_per_step, "tokens_per_s": shape.tokens_per_step / median,
               "tokens_per_s_iqr": [shape.tokens_per_step / q3, shape.tokens_per_step / q1],
               "cos_sin_bytes": case.cos_sin_bytes(), "full_rope_cos_sin_bytes": full_bytes}
        base_label = spec.baseline + ("+compile" if spec.compile else "")
        if base_label != spec.label and base_label in timings:
            row.update(paired_overhead(times, timings[base_label], rng))
        else:
            row.update({"overhead_pct": None, "overhead_pct_q1": None, "overhead_pct_q3": None,
                        "overhead_pct_ci95": None})
        row["flops_per_token"] = flops_per_token(case.linear_weights(), shape)
        peak = device_meta["peak_tflops"]
        row["mfu"] = row["flops_per_token"] * row["tokens_per_s"] / (peak * 1e12) if peak else None
        row.update(measure_memory(case, device))
        rows.append(row)
    return rows


def full_table_bytes(cases: dict[str, TrainCase], shape: Shape) -> int:
    """Return the bytes of a full-RoPE model's cos/sin buffers, from the rope1.00 case or a fresh model."""
    for case in cases.values():
        if not case.spec.plain and case.spec.rope_fraction == 1.0:
            return case.cos_sin_bytes()
    config = GPTConfig(vocab_size=shape.vocab_size, block_size=shape.block_size, n_layer=1,
                       n_head=shape.n_head, n_embd=shape.n_embd, rope_fraction=1.0)
    rotary = GPT(config).rotary
    return sum(t.numel() * t.element_size() for t in (rotary.cos, rotary.sin))


def measure_rotary(args: argparse.Namespace, specs: list[Spec], shape: Shape, device: str, dtype: str,
                   rng: random.Random) -> list[dict]:
    """Time apply_rotary on q and k of the preset's shape for every rotated width, interleaved."""
    widths = sorted({rotary_dims(shape.head_dim, s.rope_fraction) for s in specs if not s.plain} - {0})
    if not widths:
        return []
    act_dtype = torch.float32 if dtype == "float32" else getattr(torch, dtype)  # what autocast feeds in
    timer = make_timer(device)
    min_timing = ROTARY_MIN_TIMING_S["cuda" if device.startswith("cuda") else "cpu"]
    functions: dict[str, Callable[[], None]] = {}
    calls: dict[str, int] = {}
    tables = {r: build_rope_cache(shape.block_size, r, shape.rope_base, device=torch.device(device)) for r in widths}
    # Every width rotates the same tensors, so memory placement cannot favour one width.
    inputs = {"fwd": strided_q_and_k(shape, device, act_dtype, requires_grad=False),
              "fwd_bwd": strided_q_and_k(shape, device, act_dtype, requires_grad=True)}
    for r in widths:
        for kind, fn in rotary_functions(inputs, *tables[r]).items():
            for _ in range(max(1, args.warmup)):
                fn()
            single = min(timer(fn) for _ in range(3))
            calls[f"{r}/{kind}"] = max(1, math.ceil(min_timing / max(single, 1e-9)))
            functions[f"{r}/{kind}"] = repeat_call(fn, calls[f"{r}/{kind}"])
    timings = interleaved_timings(functions, args.repeats, rng, timer)

    rows = []
    for r in widths:
        row = {"rope_dims": r, "head_dim": shape.head_dim, "rope_fraction_of_head": r / shape.head_dim,
               "shape": [shape.batch_size, shape.n_head, shape.block_size, shape.head_dim],
               "dtype": str(act_dtype).replace("torch.", ""),
               "cos_sin_bytes": sum(t.numel() * t.element_size() for t in tables[r])}
        for kind in ("fwd", "fwd_bwd"):
            per_call = [t / calls[f"{r}/{kind}"] for t in timings[f"{r}/{kind}"]]
            q1, median, q3 = quartiles(per_call)
            row.update({f"{kind}_us": 1e6 * median, f"{kind}_us_q1": 1e6 * q1, f"{kind}_us_q3": 1e6 * q3,
                        f"{kind}_calls_per_timing": calls[f"{r}/{kind}"]})
        rows.append(row)
    return rows


# -----------------------------------------------------------------------------
# Targets

def verdict(ci: Optional[list[float]], limit: float) -> str:
    """Return met when the whole 95% CI is at or below the limit, missed when all of it is above."""
    if ci is None:
        return "not measured"
    if ci[1] <= limit:
        return "met"
    if ci[0] > limit:
        return "missed"
    return "inconclusive"


def find_row(rows: list[dict], config: str) -> Optional[dict]:
    """Return the eager row of a configuration, else its compiled row, else None."""
    matches = [row for row in rows if row["config"] == config]
    matches.sort(key=lambda row: row["compile"])
    return matches[0] if matches else None


def check_targets(rows: list[dict], shape: Shape, preset: str, device: str) -> list[dict]:
    """Compare the measured values with the speed, table-size and throughput targets."""
    on_cpu_preset = preset == "cpu" and device == "cpu"
    checks = []
    for config, limit in (("rope1.00", 3.0), ("rope0.10", 1.0)):
        row = find_row(rows, config)
        check = {"id": f"{config}_step_overhead",
                 "target": f"{config} train step overhead vs rope0.00 <= {limit:g}% (CPU preset on CPU)",
                 "limit_pct": limit, "measured_pct": row["overhead_pct"] if row else None,
                 "ci95_pct": row["overhead_pct_ci95"] if row else None}
        check["verdict"] = verdict(check["ci95_pct"], limit) if on_cpu_preset else "not applicable: not the CPU preset on CPU"
        checks.append(check)

    table = next((row for row in rows if row["config"] == "rope0.10"), None)
    r = rotary_dims(shape.head_dim, 0.1)
    check = {"id": "rope0.10_table_bytes",
             "target": f"cos/sin table at rope0.10 is exactly {r}/{shape.head_dim} of full RoPE's, read from the tensors",
             "measured_bytes": table["cos_sin_bytes"] if table else None,
             "full_bytes": table["full_rope_cos_sin_bytes"] if table else None}
    if table is None:
        check["verdict"] = "not measured"
    else:
        exact = table["cos_sin_bytes"] * shape.head_dim == table["full_rope_cos_sin_bytes"] * r
        check["ratio_full_over_measured"] = table["full_rope_cos_sin_bytes"] / table["cos_sin_bytes"]
        check["verdict"] = "met" if exact else "missed"
    checks.append(check)

    row = find_row(rows, "rope0.00-gpt2-learnedpos")
    check = {"id": "gpt2_vs_plain_step",
             "target": "model.GPT (gpt2, learned positions, NoPE) step time <= PlainGPT's at the same size, "
                       "i.e. throughput at least PlainGPT's",
             "limit_pct": 0.0, "measured_pct": row["overhead_pct"] if row else None,
             "ci95_pct": row["overhead_pct_ci95"] if row else None}
    check["verdict"] = verdict(check["ci95_pct"], 0.0)
    checks.append(check)

    mfu_rows = [row for row in rows if row["compile"] and row["mfu"] is not None]
    check = {"id": "gpu_mfu", "target": "MFU of the GPU preset at bf16, compiled, on CUDA",
             "measured_mfu": {row["label"]: row["mfu"] for row in mfu_rows} or None}
    if not device.startswith("cuda"):
        check["verdict"] = "not measured: no CUDA device in this run"
    elif not mfu_rows:
        check["verdict"] = "not measured: needs --compile, bf16 and a known peak (or --peak_tflops)"
    else:
        check["verdict"] = "measured" if preset == "gpu" else "measured, but not with the GPU preset"
    checks.append(check)
    return checks


# -----------------------------------------------------------------------------
# Output

def format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ",".join(format_value(v) for v in value)
    return str(value).replace(" ", "_")


def print_measurement(kind: str, row: dict, keys: list[str]) -> None:
    """Print one key=value line, with spaces in values replaced by underscores."""
    print(f"bench={kind} " + " ".join(f"{k}={format_value(row.get(k))}" for k in keys), flush=True)


def print_tables(rows: list[dict], rotary_rows: list[dict], checks: list[dict], nope_step_ms: Optional[float],
                 n_layer: int, grad_accum: int) -> None:
    header = (f"{'config':<26} {'r/hs':>6} {'compile':>7} {'step ms':>8} {'IQR ms':>15} {'tok/s':>9} "
              f"{'vs base %':>9} {'IQR %':>14} {'base':>15} {'peak MiB':>9} {'cos/sin B':>9} {'MFU':>6}")
    print()
    print(header)
    print("-" * len(header))
    for row in rows:
        overhead = f"{row['overhead_pct']:+.2f}" if row["overhead_pct"] is not None else "-"
        spread = (f"{row['overhead_pct_q1']:+.1f}..{row['overhead_pct_q3']:+.1f}"
                  if row["overhead_pct"] is not None else "-")
        peak = f"{row['peak_bytes'] / 2**20:.1f}" if row["peak_bytes"] is not None else "n/m"
        mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "-"
        base = row["baseline"] if row["overhead_pct"] is not None else "-"
        print(f"{row['config']:<26} {str(row['rope_dims']) + '/' + str(row['head_dim']):>6} "
              f"{'on' if row['compile'] else 'off':>7} {row['step_ms']:>8.2f} "
              f"{row['step_ms_q1']:>7.2f}..{row['step_ms_q3']:<6.2f} {row['tokens_per_s']:>9.0f} "
              f"{overhead:>9} {spread:>14} {base:>15} {peak:>9} {row['cos_sin_bytes']:>9} {mfu:>6}")
    print("step ms: median train step (IQR alongside). vs base %: median of per-round step ratios to the base "
          "configuration, minus 1. peak MiB: parameters, buffers and AdamW state plus the step's peak "
          "allocation (n/m: not measured). cos/sin B: bytes of the model's cos and sin buffers.")

    if rotary_rows:
        print()
        header = f"{'rotary r/hs':>11} {'fwd us':>9} {'IQR us':>17} {'fwd+bwd us':>10} {'IQR us':>17} {'est. % of NoPE step':>20}"
        print(header)
        print("-" * len(header))
        for row in rotary_rows:
            share = (f"{100 * row['fwd_bwd_us'] * n_layer * grad_accum / (1000 * nope_step_ms):.2f}"
                     if nope_step_ms else "-")
            print(f"{str(row['rope_dims']) + '/' + str(row['head_dim']):>11} {row['fwd_us']:>9.1f} "
                  f"{row['fwd_us_q1']:>8.1f}..{row['fwd_us_q3']:<7.1f} {row['fwd_bwd_us']:>10.1f} "
                  f"{row['fwd_bwd_us_q1']:>8.1f}..{row['fwd_bwd_us_q3']:<7.1f} {share:>20}")
        print("Each call rotates q and k once. est. % of NoPE step: fwd+bwd x n_layer x micro-batches / the "
              "rope0.00 step time, an estimate that ignores overlap and cache effects.")

    print()
    for check in checks:
        measured = check.get("measured_pct")
        detail = ""
        if measured is not None:
            ci = check["ci95_pct"]
            detail = f" measured {measured:+.2f}% (95% CI {ci[0]:+.2f}..{ci[1]:+.2f})"
        elif check.get("ratio_full_over_measured") is not None:
            detail = (f" measured {check['measured_bytes']} B vs {check['full_bytes']} B "
                      f"({check['ratio_full_over_measured']:.2f}x smaller)")
        print(f"target: {check['target']}:{detail} -> {check['verdict']}")


def build_header(args: argparse.Namespace, shape: Shape, specs: list[Spec], device_meta: dict, dtype: str) -> dict:
    """Return the JSON header: everything needed to reproduce the run and read its numbers."""
    preset = PRESETS[args.preset]
    settings = {**vars(args), "dtype": dtype, "lr": preset["lr"], "weight_decay": WEIGHT_DECAY,
                "betas": list(BETAS), "grad_clip": GRAD_CLIP, "shape": asdict(shape),
                "tokens_per_step": shape.tokens_per_step, "configs_measured": [s.label for s in specs]}
    method = {"order": "round-robin: each repeat times one step of every configuration, in an order "
                       "shuffled per repeat with --seed",
              "step": "train.py's step: forward and loss under the training dtype, backward, clip_grad_norm_, "
                      "AdamW step, zero_grad, with .item() on the loss and the gradient norm",
              "figure": "median over --repeats timings after --warmup untimed steps",
              "spread": "interquartile range (25th..75th percentile); every timing is in step_ms_all",
              "overhead": "median of per-repeat ratios to the baseline timed in the same round, with a "
                          f"{BOOTSTRAP_RESAMPLES}-resample bootstrap 95% CI",
              "rotary": "apply_rotary on q and k, strided views of a (B, T, 3C) tensor as in attention; "
                        "fwd_bwd stops the backward pass at q and k",
              "flops": FLOPS_FORMULA}
    return {"bench": "partial-rope bench.py", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv,
            "settings": settings, "versions": library_versions(), "git_commit": git_commit(),
            "platform": platform.platform(), "device": device_meta, "threads": thread_info(),
            "load_average_start": load_average(), "method": method}


def print_measurements(rows: list[dict], rotary_rows: list[dict], checks: list[dict]) -> None:
    for row in rows:
        print_measurement("train", row, ["label", "rope_dims", "num_params", "step_ms", "step_ms_q1", "step_ms_q3",
                                         "tokens_per_s", "baseline", "overhead_pct", "overhead_pct_q1",
                                         "overhead_pct_q3", "overhead_pct_ci95", "peak_bytes", "state_bytes",
                                         "step_peak_bytes", "cos_sin_bytes", "flops_per_token", "mfu"])
    for row in rotary_rows:
        print_measurement("rotary", row, ["rope_dims", "head_dim", "dtype", "fwd_us", "fwd_us_q1", "fwd_us_q3",
                                          "fwd_bwd_us", "fwd_bwd_us_q1", "fwd_bwd_us_q3"])
    for check in checks:
        print_measurement("target", check, ["id", "measured_pct", "ci95_pct", "verdict"])


def write_json(path: Path, result: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_output_path(path: Path) -> None:
    """Raise BenchError before any measurement when --out cannot be written."""
    if path.is_dir():
        raise BenchError(f"--out {path} is a directory; name a .json file")
    if not path.parent.is_dir():
        raise BenchError(f"--out {path}: folder {path.parent} not found; create it or pick another path")
    if not os.access(path.parent, os.W_OK):
        raise BenchError(f"--out {path}: folder {path.parent} is not writable; pick another path")


def main(argv: Optional[list[str]] = None) -> int:
    started = time.time()
    try:
        args = parse_args(argv)
        device = resolve_device(args.device)
        device_type = "cuda" if device.startswith("cuda") else "cpu"
        dtype = pick_dtype(args.dtype, device_type)
        check_output_path(Path(args.out))
    except (BenchError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    preset = PRESETS[args.preset]
    shape = Shape(vocab_size=args.vocab_size, block_size=args.block_size, n_layer=preset["n_layer"],
                  n_head=preset["n_head"], n_embd=preset["n_embd"], batch_size=args.batch_size,
                  grad_accum=preset["grad_accum"], rope_base=args.rope_base)
    specs = selected_specs(args, shape.head_dim, device_type)
    if any(s.compile for s in specs):
        raise_recompile_limit(len(specs))
    device_meta = device_info(device, dtype, args.peak_tflops)
    header = build_header(args, shape, specs, device_meta, dtype)
    print(f"bench=start preset={args.preset} device={device} dtype={dtype} repeats={args.repeats} "
          f"warmup={args.warmup} configs={len(specs)} torch={torch.__version__} "
          f"threads={torch.get_num_threads()} load_average={format_value(header['load_average_start'])}",
          flush=True)
    if not device.startswith("cuda"):
        print("bench=note message=\"CPU run: timings use time.perf_counter; no CUDA timings and no MFU\"", flush=True)

    rng = random.Random(args.seed)
    try:
        cases, timings, first_step_s = measure_training(args, specs, shape, device, dtype, preset["lr"], rng)
        rows = summarize_training(specs, cases, timings, first_step_s, shape, device_meta, device, rng)
        rotary_rows = measure_rotary(args, specs, shape, device, dtype, rng)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    checks = check_targets(rows, shape, args.preset, device)

    print_measurements(rows, rotary_rows, checks)
    nope = next((row for row in rows if row["label"] == "rope0.00"), None)
    print_tables(rows, rotary_rows, checks, nope["step_ms"] if nope else None, shape.n_layer, shape.grad_accum)

    header["load_average_end"] = load_average()
    header["wall_seconds"] = round(time.time() - started, 2)
    write_json(Path(args.out), {**header, "train": rows, "rotary": rotary_rows, "targets": checks})
    print(f"\nbench=done out={args.out} wall_seconds={header['wall_seconds']} "
          f"load_average={format_value(header['load_average_end'])}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
