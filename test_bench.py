"""Tests of bench.py: python -m pytest -q test_bench.py

They run every code path of bench.py on tiny batches and check the JSON it writes. They assert
nothing about speed, because timings on a shared machine are too noisy for a test to judge.
"""

import json
import random

import pytest
import torch

import bench
from model import GPT, GPTConfig
from train import PRESETS

TINY = ["--batch_size", "2", "--block_size", "32", "--repeats", "3", "--warmup", "1", "--threads", "1"]


@pytest.fixture(autouse=True, scope="module")
def restore_torch_state():
    # bench.main sets the thread count and dynamo's recompile limit for the whole process.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    torch._dynamo.reset()


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    assert bench.main(["--quick", *TINY, "--out", str(out)]) == 0
    return json.loads(out.read_text())


# -----------------------------------------------------------------------------
# A whole run

def test_quick_run_header_reproduces_run(quick_result):
    header = quick_result
    assert header["settings"]["preset"] == "cpu"
    assert header["settings"]["repeats"] == 3
    assert header["settings"]["shape"]["batch_size"] == 2
    assert header["settings"]["shape"]["n_layer"] == PRESETS["cpu"]["n_layer"]
    assert header["versions"]["torch"] == torch.__version__
    assert header["device"]["device"] == "cpu"
    assert header["device"]["cuda_timings"] is False
    assert header["device"]["timer"] == "time.perf_counter"
    assert header["threads"]["torch_threads"] == 1
    assert len(header["load_average_start"]) == 3
    assert len(header["load_average_end"]) == 3
    assert "6 * N" in header["method"]["flops"]


def test_quick_run_measures_every_config(quick_result):
    labels = [row["label"] for row in quick_result["train"]]
    assert labels == bench.SPEC_NAMES  # eager only on CPU unless --compile
    for row in quick_result["train"]:
        assert len(row["step_ms_all"]) == 3
        assert row["step_ms_min"] <= row["step_ms_q1"] <= row["step_ms"] <= row["step_ms_q3"] <= row["step_ms_max"]
        assert row["tokens_per_step"] == 2 * 32
        assert row["tokens_per_s"] == pytest.approx(64 / (row["step_ms"] / 1000))
        assert row["state_bytes"] > 0
        assert row["peak_bytes"] is None or row["peak_bytes"] > row["state_bytes"]
        assert row["mfu"] is None


def test_quick_run_overhead_against_baseline(quick_result):
    rows = {row["label"]: row for row in quick_result["train"]}
    assert rows["rope0.00"]["overhead_pct"] is None
    assert rows["plain-gpt2"]["overhead_pct"] is None
    assert rows["rope0.10"]["baseline"] == "rope0.00"
    assert rows["rope0.00-gpt2-learnedpos"]["baseline"] == "plain-gpt2"
    for label in ("rope1.00", "rope0.10", "rope0.00-qknorm", "rope0.00-gpt2-learnedpos"):
        row = rows[label]
        low, high = row["overhead_pct_ci95"]
        assert low <= row["overhead_pct"] <= high
        assert row["overhead_pct_q1"] <= row["overhead_pct"] <= row["overhead_pct_q3"]


def test_quick_run_table_bytes_from_tensors(quick_result):
    rows = {row["label"]: row for row in quick_result["train"]}
    expected_dims = {"rope0.00": 0, "rope2ch": 2, "rope0.10": 6, "rope0.25": 16, "rope0.50": 32, "rope1.00": 64}
    for label, r in expected_dims.items():
        assert rows[label]["rope_dims"] == r
        assert rows[label]["cos_sin_bytes"] == 2 * 32 * r * 4  # cos and sin, block_size x r float32
    assert rows["rope0.10"]["full_rope_cos_sin_bytes"] == rows["rope1.00"]["cos_sin_bytes"]
    assert rows["plain-gpt2"]["cos_sin_bytes"] == 0


def test_quick_run_equal_sizes_for_comparison(quick_result):
    rows = {row["label"]: row for row in quick_result["train"]}
    assert rows["plain-gpt2"]["num_params"] == rows["rope0.00-gpt2-learnedpos"]["num_params"]


def test_quick_run_rotary_rows(quick_result):
    rotary = quick_result["rotary"]
    assert [row["rope_dims"] for row in rotary] == [2, 6, 16, 32, 64]
    for row in rotary:
        assert row["shape"] == [2, 2, 32, 64]
        assert row["dtype"] == "float32"
        assert row["fwd_us"] > 0
        assert row["fwd_bwd_us"] > 0
        assert row["fwd_us_q1"] <= row["fwd_us"] <= row["fwd_us_q3"]
        assert row["cos_sin_bytes"] == 2 * 32 * row["rope_dims"] * 4


def test_quick_run_targets(quick_result):
    checks = {check["id"]: check for check in quick_result["targets"]}
    assert set(checks) == {"rope1.00_step_overhead", "rope0.10_step_overhead", "rope0.10_table_bytes",
                           "gpt2_vs_plain_step", "gpu_mfu"}
    table = checks["rope0.10_table_bytes"]
    assert table["verdict"] == "met"
    assert table["measured_bytes"] * 64 == table["full_bytes"] * 6
    assert checks["gpu_mfu"]["verdict"].startswith("not measured")
    for key in ("rope1.00_step_overhead", "rope0.10_step_overhead", "gpt2_vs_plain_step"):
        assert checks[key]["verdict"] in ("met", "missed", "inconclusive")


def test_quick_run_prints_one_line_per_measurement(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert bench.main([*TINY, "--configs", "rope0.10", "--repeats", "2", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    train = [line for line in lines if line.startswith("bench=train ")]
    rotary = [line for line in lines if line.startswith("bench=rotary ")]
    assert len(train) == 2  # rope0.10 and the rope0.00 baseline it needs
    assert len(rotary) == 1
    fields = dict(item.split("=", 1) for item in train[0].split())
    assert {"label", "step_ms", "tokens_per_s", "peak_bytes", "cos_sin_bytes", "overhead_pct"} <= set(fields)
    assert [row["label"] for row in json.loads(out.read_text())["train"]] == ["rope0.00", "rope0.10"]


def test_compile_path_runs(tmp_path):
    # The eager backend traces with dynamo but generates no code, so this stays fast.
    out = tmp_path / "b.json"
    args = [*TINY, "--configs", "rope0.10", "--repeats", "2", "--compile", "--compile_backend", "eager",
            "--out", str(out)]
    assert bench.main(args) == 0
    rows = json.loads(out.read_text())["train"]
    assert [row["label"] for row in rows] == ["rope0.00", "rope0.10", "rope0.00+compile", "rope0.10+compile"]
    compiled = {row["label"]: row for row in rows}["rope0.10+compile"]
    assert compiled["compile"] is True
    assert compiled["overhead_pct"] is not None  # measured against rope0.00+compile


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "0"], "--repeats 0 is invalid"),
    (["--warmup", "-1"], "--warmup -1 is invalid"),
    (["--peak_tflops", "0"], "--peak_tflops 0.0 is invalid"),
    (["--device", "tpu"], "--device tpu is invalid"),
])
def test_invalid_settings_exit_1(argv, message, capsys):
    assert bench.main(argv) == 1
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_request_without_cuda_exits_1(capsys):
    assert bench.main(["--device", "cuda"]) == 1
    assert "CUDA is not available" in capsys.readouterr().err


# -----------------------------------------------------------------------------
# Pieces

@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_plain_gpt_same_size_as_ours(preset):
    p = PRESETS[preset]
    plain = bench.PlainGPT(65, p["block_size"], p["n_layer"], p["n_head"], p["n_embd"])
    ours = GPT(GPTConfig(vocab_size=65, block_size=p["block_size"], n_layer=p["n_layer"], n_head=p["n_head"],
                         n_embd=p["n_embd"], rope_fraction=0.0, arch="gpt2", pos_emb="learned"))
    assert plain.num_params() == ours.num_params()


def test_plain_gpt_forward_and_backward():
    torch.manual_seed(0)
    model = bench.PlainGPT(50, 16, 2, 2, 64)
    idx = torch.randint(0, 50, (3, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 16, 50)
    assert abs(loss.item() - torch.log(torch.tensor(50.0)).item()) < 0.5  # near uniform at init
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_plain_gpt_is_causal():
    torch.manual_seed(1)
    model = bench.PlainGPT(50, 16, 1, 2, 64)
    idx = torch.randint(0, 50, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % 50
    a, _ = model(idx, idx)
    b, _ = model(changed, changed)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:], atol=1e-6)


def test_configs_add_their_baselines():
    args = bench.parse_args(["--configs", "rope0.10", "rope0.00-gpt2-learnedpos", "--no-compile"])
    names = [s.name for s in bench.selected_specs(args, 64, "cpu")]
    assert names == ["rope0.00", "rope0.10", "rope0.00-gpt2-learnedpos", "plain-gpt2"]


def test_compile_default_depends_on_device():
    args = bench.parse_args(["--configs", "rope0.10"])
    assert not any(s.compile for s in bench.selected_specs(args, 64, "cpu"))
    cuda_specs = bench.selected_specs(args, 64, "cuda")
    assert [s.label for s in cuda_specs] == ["rope0.00", "rope0.10", "rope0.00+compile", "rope0.10+compile"]


def test_two_channel_config_follows_head_dim():
    specs = {s.name: s for s in bench.all_specs(32)}
    assert specs["rope2ch"].rope_fraction == 2 / 32


def test_quick_sets_fewer_repeats():
    quick = bench.parse_args(["--quick"])
    full = bench.parse_args([])
    assert (quick.repeats, quick.warmup) == (bench.QUICK_REPEATS, bench.QUICK_WARMUP)
    assert (full.repeats, full.warmup) == (bench.FULL_REPEATS, bench.FULL_WARMUP)
    assert bench.parse_args(["--quick", "--repeats", "9"]).repeats == 9


def test_interleaved_timings_visit_each_once_per_repeat():
    calls = []
    functions = {name: (lambda name=name: calls.append(name)) for name in "abcd"}
    timings = bench.interleaved_timings(functions, 6, random.Random(0), lambda fn: fn() or 1.0)
    assert all(len(t) == 6 for t in timings.values())
    rounds = [calls[i:i + 4] for i in range(0, 24, 4)]
    assert all(sorted(r) == list("abcd") for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # the order changes between repeats


def test_paired_overhead_from_ratios():
    result = bench.paired_overhead([1.1, 2.2, 3.3, 4.4], [1.0, 2.0, 3.0, 4.0], random.Random(0))
    assert result["overhead_pct"] == pytest.approx(10.0)
    assert result["overhead_pct_ci95"] == pytest.approx([10.0, 10.0])


def test_paired_overhead_ignores_shared_drift():
    # Both configurations slow down together in the last rounds; the ratio stays 1.05.
    base = [1.0, 1.0, 1.0, 2.0, 2.0]
    times = [1.05 * b for b in base]
    assert bench.paired_overhead(times, base, random.Random(0))["overhead_pct"] == pytest.approx(5.0)


def test_quartiles():
    assert bench.quartiles([2.0]) == (2.0, 2.0, 2.0)
    assert bench.quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 3.0, 4.0)


@pytest.mark.parametrize("ci, verdict", [
    ([0.5, 2.0], "met"), ([2.0, 4.0], "inconclusive"), ([3.5, 5.0], "missed"), (None, "not measured")])
def test_verdict_from_confidence_interval(ci, verdict):
    assert bench.verdict(ci, 3.0) == verdict


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100-PCIE-40GB", 312.0), ("NVIDIA H100 NVL", None),
    ("NVIDIA GeForce RTX 4090", None)])
def test_peak_lookup_by_device_name(name, peak):
    assert bench.lookup_peak_tflops(name) == peak


def test_peak_override_used_on_cpu():
    info = bench.device_info("cpu", "float32", 100.0)
    assert info["peak_tflops"] == 100.0
    assert info["peak_source"] == "--peak_tflops"
    assert bench.device_info("cpu", "float32", None)["peak_tflops"] is None


def test_flops_per_token_formula():
    shape = bench.Shape(vocab_size=65, block_size=128, n_layer=4, n_head=2, n_embd=128, batch_size=1, grad_accum=1)
    case = bench.TrainCase(bench.Spec("rope0.00"), shape, [], "cpu", "float32", 1e-3, 0, "inductor")
    C, hidden = 128, 384  # SwiGLU hidden width for n_embd 128
    linear = 4 * (3 * C * C + C * C + C * 2 * hidden + hidden * C) + C * 65
    assert case.linear_weights() == linear
    assert bench.flops_per_token(linear, shape) == 6 * linear + 12 * 4 * 128 * 128


def test_cpu_step_peak_grows_with_batch():
    shape = bench.Shape(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=128, batch_size=2, grad_accum=1)
    peaks = {}
    for batch in (2, 16):
        ids = torch.randint(0, 65, (batch, 17))
        case = bench.TrainCase(bench.Spec("rope0.10", 0.1), shape, [(ids[:, :-1], ids[:, 1:])], "cpu",
                               "float32", 1e-3, 0, "inductor")
        case.step()
        peaks[batch] = bench.cpu_step_peak_bytes(case)
    if peaks[2] is None:
        pytest.skip("this PyTorch version has no profiler event tree")
    assert peaks[16] > peaks[2] > 0
    assert peaks[16] >= 16 * 16 * 65 * 4  # at least the float32 logits


def test_state_bytes_counts_adam_state():
    shape = bench.Shape(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=128, batch_size=2, grad_accum=1)
    ids = torch.randint(0, 65, (2, 17))
    case = bench.TrainCase(bench.Spec("rope0.00"), shape, [(ids[:, :-1], ids[:, 1:])], "cpu", "float32",
                           1e-3, 0, "inductor")
    params = sum(p.numel() * 4 for p in case.raw_model.parameters())
    assert case.state_bytes() == params  # no optimizer state before the first step
    case.step()
    assert case.state_bytes() >= 3 * params  # weights plus AdamW's exp_avg and exp_avg_sq
