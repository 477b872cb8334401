"""The benchmark suite runs (quick mode, as CI runs it, compiled at XLA's default optimization level
like any benchmark) and counts FLOPs right."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.models import IMAGE_SHAPE, NUM_CLASSES, config_for, training_flops_per_sample
from cvae_jax.tasks.images import build, init_for

pytestmark = pytest.mark.slow  # benchmark subprocesses

ROOT = Path(__file__).parent.parent


def _flops(model: str) -> float:
    cfg = config_for(model, 128)
    parts = build(cfg, IMAGE_SHAPE, NUM_CLASSES)
    return training_flops_per_sample(parts.model, init_for(parts, cfg, IMAGE_SHAPE, NUM_CLASSES).params)


def test_flops_match_the_closed_form_of_the_layers():
    # 3 x 2 x multiply-adds of every dense layer (mean and log-variance heads: 2 x latent outputs).
    assert _flops("article-vae") == 6 * (784 * 256 + 256 * 2 * 2 + 2 * 256 + 256 * 784)
    assert _flops("mlp-vae") == 6 * (784 * 512 + 512 * 512 + 512 * 32 * 2 + 32 * 512 + 512 * 512 + 512 * 784)
    # Conv 3x3x1->32 over 28x28, then dense 25088->64, heads (64+10)->2 x 2, decoder (2+10)->64->784.
    assert _flops("article-cvae") == 6 * (28 * 28 * 9 * 32 + 25088 * 64 + 74 * 2 * 2 + 12 * 64 + 64 * 784)
    # conv VAE: convs 1->32 (14x14 out), 32->64 (7x7); dense 3136->256->16 (x2), 16->256->3136; transposed
    # convs 64->64 (14x14 out) and 64->32 (28x28 out) count the data each output touches (1/4 of the
    # taps of a stride-2 transposed conv); output conv 32->1 (28x28)
    assert _flops("conv-vae") == 6 * (
        14 * 14 * 9 * 32
        + 7 * 7 * 9 * 32 * 64
        + 3136 * 256
        + 256 * 16 * 2
        + 16 * 256
        + 256 * 3136
        + 14 * 14 * 9 * 64 * 64 // 4
        + 28 * 28 * 9 * 64 * 32 // 4
        + 28 * 28 * 9 * 32
    )


def _own_cache(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    """`env` with a persistent compilation cache of the test's own (tmp_path/xla_cache)."""
    return {**env, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla_cache")}


def _wrote_to_cache(tmp_path: Path) -> list[str]:
    return [p.name for p in (tmp_path / "xla_cache").glob("*")]


def test_quick_mode_runs_and_reports_every_cell(tmp_path, full_opt_env):
    saved = tmp_path / "quick.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.throughput", "--quick", "--json", "--out", str(saved)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=_own_cache(tmp_path, full_opt_env),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not _wrote_to_cache(tmp_path)  # compile times are measured, never loaded from a cache
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    peak = [r for r in lines if r["kind"] == "matmul_peak"]
    train = [r for r in lines if r["kind"] == "train"]
    assert len(peak) == 1 and peak[0]["flops_per_s"] > 1e9
    assert sorted(r["mode"] for r in train) == ["fused", "step"]
    for r in train:
        assert r["samples_per_s"] > 0 and r["compile_s"] > 0 and r["peak_host_bytes"] > 0
        assert abs(r["steps_per_s"] * r["batch"] - r["samples_per_s"]) < 1e-6 * r["samples_per_s"]
        assert r["host_page_faults_per_step"] >= 0
        # Achieved FLOP/s cannot beat the machine: a sanity bound on the timing and the FLOP count.
        assert r["achieved_flops_per_s"] < 2 * peak[0]["flops_per_s"]
    assert "| article-vae | 128 | cvae_jax | fused |" in proc.stdout
    # --table re-renders the saved lines: the same table as the run printed, nothing measured again.
    printed = [line for line in proc.stdout.splitlines() if line.startswith("|")]
    again = subprocess.run(
        [sys.executable, "-m", "benchmarks.throughput", "--table", str(saved)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.splitlines() == printed and len(printed) == 4


def test_table_of_missing_or_corrupt_files_says_what_is_wrong(tmp_path):
    from benchmarks.throughput import main

    with pytest.raises(SystemExit, match="cannot read .*nope.jsonl"):
        main(["--table", str(tmp_path / "nope.jsonl")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "train", "samples_per_s": 1}\n{"kind": "tra\n')
    with pytest.raises(SystemExit, match="bad.jsonl:2 is not a JSON object"):
        main(["--table", str(bad)])
    peak_only = tmp_path / "peak.jsonl"
    peak_only.write_text('{"kind": "matmul_peak", "flops_per_s": 1e9}\n')
    with pytest.raises(SystemExit, match="no training measurements"):
        main(["--table", str(peak_only)])


def test_reference_architectures_match_the_cvae_jax_models():
    from benchmarks.common import ARCH

    for name in ARCH:
        m = config_for(name, 1).model
        assert ARCH[name] == {
            "conditional": m.kind == "cvae",
            "latent": m.latent_dim,
            "encoder_conv": list(m.encoder_conv),
            "conv_stride": m.encoder_conv_stride,
            "encoder_hidden": list(m.encoder_hidden),
            "decoder_hidden": list(m.decoder_hidden),
            "decoder_conv": list(m.decoder_conv),
            "condition_site": m.condition_site,
        }, name


def test_set_overrides_reach_the_measured_config():
    """--set KEY=VALUE changes the config the cell trains (and names it in the mode): a microbatch
    count that does not divide the batch is refused with the config error, one that does runs."""
    import pytest

    from benchmarks import jax_cell
    from benchmarks.throughput import plan
    from cvae_jax.config import ConfigError

    spec = {"model": "article-vae", "batch": 64, "mode": "device", "samples": 256, "repeats": 1}
    result = jax_cell.measure({**spec, "set": ["train.microbatches=2"]})
    assert result["mode"] == "device (train.microbatches=2)" and result["samples_per_s"] > 0
    with pytest.raises(ConfigError, match="microbatches=3 must divide"):
        jax_cell.measure({**spec, "set": ["train.microbatches=3"]})
    with pytest.raises(ConfigError):
        jax_cell.measure({**spec, "set": ["train.no_such_option=1"]})

    class Args:
        model, batch_size, devices, mode, compare = ["article-vae"], [64], [1], ["step"], ["torch"]
        samples, repeats, set, data, variant = 256, 1, ["train.microbatches=2"], "", []

    cells = plan(Args)
    assert [c.get("set") for c in cells] == [["train.microbatches=2"], None]  # references take no overrides
    # --variant: each override set (';'-separated; '' the model as it is) a cell of its own, after --set
    Args.variant = ["", "train.objective=miwae; train.iwae_samples=5"]
    sets = [c.get("set") for c in plan(Args)]
    assert sets == [
        ["train.microbatches=2"],
        ["train.microbatches=2", "train.objective=miwae", "train.iwae_samples=5"],
        None,
    ]


def test_step_profile_times_the_step_and_its_pieces(tmp_path, full_opt_env):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.step_profile",
            "--model",
            "article-vae",
            "--batch-size",
            "64",
            "--steps",
            "4",
            "--repeats",
            "2",
            "--ops",
            "3",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=_own_cache(tmp_path, full_opt_env),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not _wrote_to_cache(tmp_path)
    [r] = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert (r["model"], r["batch"], r["steps"]) == ("article-vae", 64, 4)
    assert all(r[f"{piece}_ms"] > 0 for piece in ("step", "grad", "update", "gather"))
    assert abs(r["samples_per_s"] - 64 / (r["step_ms"] / 1e3)) < 1e-6 * r["samples_per_s"]
    assert r["train_flops_per_sample"] == _flops("article-vae")
    assert r["fusions"] > 0 and r["compile_s"] > 0
    # The traced op list: the three longest compiled ops of the step, longest first, each with its
    # shape and the JAX operation it came from.
    times = [o["ms_per_step"] for o in r["ops"]]
    assert len(times) == 3 and times == sorted(times, reverse=True) and times[-1] > 0
    assert all(o["shape"] and o["calls_per_step"] > 0 for o in r["ops"])
    assert any(o["op_name"].startswith("jit(") for o in r["ops"])  # traced back to the JAX program


def test_op_times_rank_the_compiled_instructions_by_traced_time():
    from benchmarks.step_profile import hlo_instructions, op_times

    hlo = """
  %dot.7 = f32[32,64]{1,0} dot(%a, %b), metadata={op_name="jit(run)/while/body/encoder/Dense_0/dot_general"}
  ROOT %fusion.2 = f32[25088,64]{1,0} fusion(%c), kind=kLoop, calls=%fc, metadata={op_name="jit(run)/add"}
  %copy.1 = f32[3]{0} copy(%d)
"""
    instructions = hlo_instructions(hlo)
    assert instructions["dot.7"] == {
        "shape": "f32[32,64]{1,0}",
        "op_name": "jit(run)/while/body/encoder/Dense_0/dot_general",
    }
    assert instructions["fusion.2"]["op_name"] == "jit(run)/add" and instructions["copy.1"]["op_name"] == ""
    events = [
        {"ph": "X", "name": "dot.7", "dur": 300.0},
        {"ph": "X", "name": "dot.7", "dur": 500.0},
        {"ph": "X", "name": "fusion.2", "dur": 1000.0},
        {"ph": "X", "name": "copy.1", "dur": 10.0},
        {"ph": "X", "name": "$api.py:2479 block_until_ready", "dur": 9e6},  # not an instruction
        {"ph": "i", "name": "fusion.2", "dur": 9e6},
    ]  # not a complete ("X") event
    ranked = op_times(events, instructions, steps=2, top=2)
    assert [o["name"] for o in ranked] == ["fusion.2", "dot.7"]
    assert ranked[0]["ms_per_step"] == 0.5 and ranked[1]["ms_per_step"] == 0.4 and ranked[1]["calls_per_step"] == 1.0


def test_kernel_counts_reads_fusions_and_library_calls_from_hlo_text():
    from benchmarks.step_profile import kernel_counts

    hlo = """
  %fusion.1 = f32[4096,512]{1,0} fusion(f32[4096,784]{1,0} %p0), kind=kLoop, calls=%fused_computation
  %custom-call.2 = (f32[4096,512]{1,0}, s8[0]{0}) custom-call(f32[4096,784]{1,0} %fusion.1), custom_call_target="__cublas$gemm"
  %fusion.3 = f32[] fusion(f32[4096,512]{1,0} %gte), kind=kInput, calls=%fused_reduce
  %add.4 = f32[] add(f32[] %a, f32[] %b)
"""
    assert kernel_counts(hlo) == {"fusions": 2, "library_calls": 1}


def test_summary_takes_medians_over_rounds_and_ratios_only_between_equal_arithmetic():
    """Medians over rounds; the ratio is the best cvae_jax mode of the reference's arithmetic (dtype and
    matmul precision) over the reference: a faster bf16 or TF32 cvae_jax cell never counts against a
    full-float32 reference, and a reference with no cvae_jax cell of its arithmetic gets no ratio."""
    from benchmarks.common import precision
    from benchmarks.throughput import summarize, table

    def rec(impl, mode, sps, device_bytes=None, round_index=0, **extra):
        return {
            "kind": "train",
            "impl": impl,
            "model": "mlp-vae",
            "batch": 128,
            "mode": mode,
            "devices": 1,
            "samples_per_s": sps,
            "compile_s": 1.0,
            "peak_host_bytes": 2**30,
            "platform": "gpu",
            "peak_device_bytes": device_bytes,
            "round": round_index,
            **({"train_flops_per_sample": 1e6} if impl == "cvae_jax" else {}),
            **extra,
        }  # as the references report

    full = {"matmul_precision": "full"}
    results = [rec("cvae_jax", "step", s, 3 * 2**20, i, **full) for i, s in enumerate((100.0, 300.0, 200.0))]
    results += [rec("cvae_jax", "fused", s, 5 * 2**20, i, **full) for i, s in enumerate((400.0, 600.0, 500.0))]
    results += [rec("cvae_jax", "fused (bf16)", 900.0, compute_dtype="bfloat16")]
    results += [rec("cvae_jax", "fused (tf32)", 700.0)]  # JAX's default on a GPU
    results += [rec("torch", "", s, None, i) for i, s in enumerate((50.0, 250.0, 125.0))]
    results += [rec("keras", "", 100.0, compute_dtype="bfloat16")]  # bf16 against cvae_jax's bf16 cell
    results += [{**rec("torch_compile", "", 100.0), "batch": 4096}]  # no cvae_jax cell at its batch
    results += [{"kind": "error", "module": "x", "arg": "{}", "error": ["boom"]}]
    bf16, tf32, torch, keras = results[6], results[7], results[8], results[11]
    assert [precision(r) for r in (bf16, tf32, torch, keras)] == [
        "bf16",
        "fp32, TF32 matmuls",
        "fp32, full matmuls",
        "bf16",
    ]
    rows = {(r["impl"], r["mode"]): r for r in summarize(results, {"float32": 1e9})}
    assert rows[("cvae_jax", "step")]["samples_per_s"] == 200.0 and rows[("cvae_jax", "step")]["rounds"] == 3
    assert rows[("cvae_jax", "fused")]["samples_per_s"] == 500.0
    assert rows[("cvae_jax", "fused")]["peak_fraction"] == 500.0 * 1e6 / 1e9
    assert rows[("torch", "")]["cvae_jax_ratio"] == 500.0 / 125.0  # full float32 against full float32 only
    assert rows[("keras", "")]["cvae_jax_ratio"] == 900.0 / 100.0
    assert "cvae_jax_ratio" not in rows[("torch_compile", "")]
    assert rows[("cvae_jax", "fused")]["peak_device_mib"] == 5 and "peak_device_mib" not in rows[("torch", "")]
    text = table(list(rows.values()))
    assert rows[("torch", "")]["spread"] == (250.0 - 50.0) / 125.0  # (max - min) / median over rounds
    assert (
        "| mlp-vae | 128 | cvae_jax | fused | 1 | fp32, full matmuls | 500 | 40% | 1.00 | 50% | 1024 | 5 |  |  |"
        in text
    )
    assert "| mlp-vae | 128 | torch |  | 1 | fp32, full matmuls | 125 | 160% | 1.00 |  | 1024 |  | 4.00x |  |" in text
    # a --variant cell (config overrides, in its mode's label) against the plain cell of its mode
    variant = [
        rec("cvae_jax", "fused (train.objective=beta_tcvae)", s, None, i, **full)
        for i, s in enumerate((150.0, 250.0, 200.0))
    ]
    rows = {r["mode"]: r for r in summarize(results + variant, {"float32": 1e9}) if r["impl"] == "cvae_jax"}
    assert rows["fused (train.objective=beta_tcvae)"]["of_plain"] == 200.0 / 500.0
    assert "of_plain" not in rows["fused"] and "of_plain" not in rows["fused (tf32)"]  # not the same arithmetic
    assert "| 0.40x |" in table([rows["fused (train.objective=beta_tcvae)"]])


def test_image_rows_compare_equal_chunkings_and_each_framework_at_its_best():
    """--microbatches: a ratio only between cells of the same chunking; the best-of-each lines take each
    implementation's fastest chunking of one run."""
    from benchmarks.image_models import best_of_each, summarize, table

    def rec(impl, chunks, sps):
        r = {"kind": "image_train", "model": "sprites", "size": 64, "batch": 64, "dtype": "float32", "impl": impl}
        r.update(samples_per_s=sps, warmup_s=1.0, platform="cpu", torch_layout="channels_last")
        r["provenance"] = {"commit": "abcdef0123", "command": "python -m benchmarks.image_models"}
        if impl == "cvae_jax":
            r["train_flops_per_sample"] = 1e6
        return {**r, "microbatches": chunks} if chunks > 1 else r

    records = [rec("cvae_jax", 1, 200.0), rec("torch", 1, 250.0), rec("cvae_jax", 16, 320.0), rec("torch", 16, 180.0)]
    records += [rec("torch", 4, 280.0)]  # no cvae_jax cell of 4 chunks: no ratio
    rows = {(r["key"][5], r["key"][7]): r for r in summarize(records, {"float32": 1e9})}
    assert rows[(1, "torch")]["cvae_jax_over_this"] == 200.0 / 250.0
    assert rows[(16, "torch")]["cvae_jax_over_this"] == 320.0 / 180.0
    assert "cvae_jax_over_this" not in rows[(4, "torch")]
    assert "| sprites | 64 | 64 | 16 | fp32 | False | abcdef0 | torch | 180 |" in table(list(rows.values()))
    (line,) = best_of_each(list(rows.values()))
    assert (
        "(chunks 1, 4, 16): cvae_jax's best 320 samples/s (16 chunks)" in line and "torch 280 (4 chunks), 1.14x" in line
    )


def test_peak_fraction_is_of_the_peak_of_the_cells_compute_dtype(tmp_path):
    from benchmarks.throughput import compute_dtypes, load_results, summarize

    def rec(mode, dtype):
        return {
            "kind": "train",
            "impl": "cvae_jax",
            "model": "mlp-vae",
            "batch": 128,
            "mode": mode,
            "devices": 1,
            "samples_per_s": 1000.0,
            "compile_s": 1.0,
            "peak_host_bytes": 2**20,
            "platform": "gpu",
            "train_flops_per_sample": 1e6,
            **({"compute_dtype": dtype} if dtype else {}),
        }

    saved = tmp_path / "run.jsonl"
    # peaks without a dtype (files written before peaks had one) are float32; medians per dtype
    saved.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"kind": "matmul_peak", "flops_per_s": 1e9},
                {"kind": "matmul_peak", "dtype": "float32", "flops_per_s": 3e9},
                {"kind": "matmul_peak", "dtype": "float32", "flops_per_s": 2e9},
                {"kind": "matmul_peak", "dtype": "bfloat16", "flops_per_s": 8e9},
                rec("fused", None),
                rec("fused (model.compute_dtype=bfloat16)", "bfloat16"),
            ]
        )
        + "\n"
    )
    results, peaks = load_results([str(saved)])
    assert peaks == {"float32": 2e9, "bfloat16": 8e9}
    rows = {r["mode"]: r for r in summarize(results, peaks)}
    assert rows["fused"]["peak_fraction"] == 1e9 / 2e9
    assert rows["fused (model.compute_dtype=bfloat16)"]["peak_fraction"] == 1e9 / 8e9
    # no bfloat16 peak measured: no fraction, rather than one against the float32 peak
    rows = {r["mode"]: r for r in summarize(results, {"float32": 2e9})}
    assert "peak_fraction" not in rows["fused (model.compute_dtype=bfloat16)"]
    assert compute_dtypes([]) == ["float32"]
    assert compute_dtypes(["train.microbatches=2", "model.compute_dtype = bfloat16"]) == ["float32", "bfloat16"]
    assert compute_dtypes(["model.compute_dtype=float32"]) == ["float32"]


def test_short_epochs_are_flagged():
    from benchmarks.throughput import MIN_STEPS, short_epochs

    assert short_epochs(60000, [32, 128, 1024, 4096]) == []  # 14 steps at 4096
    [warning] = short_epochs(30720, [128, 4096])  # 7 steps at 4096
    assert "7 steps per epoch at batch 4096" in warning and f">= {MIN_STEPS * 4096}" in warning
    assert len(short_epochs(4096, [32, 1024, 4096])) == 2


def test_the_host_cpu_is_described_by_its_first_processor_and_widest_vector_isa():
    from benchmarks.common import describe_cpu

    def block(model_name, family, model, flags):
        return f"processor\t: 0\ncpu family\t: {family}\nmodel\t\t: {model}\nmodel name\t: {model_name}\nflags\t\t: {flags}\n"

    zen4 = block("AMD EPYC", 25, 17, "fpu sse4_2 avx avx2 fma avx512f avx512bw")
    zen3 = block("AMD EPYC", 25, 1, "fpu sse4_2 avx avx2 fma")
    assert describe_cpu(zen4) == {"cpu_model": "AMD EPYC", "cpu_family_model": "25/17", "cpu_isa": "avx512f"}
    assert describe_cpu(zen3)["cpu_isa"] == "avx2" and describe_cpu(zen3)["cpu_family_model"] == "25/1"
    # Only the first processor counts; a second block with other flags does not change the answer.
    assert describe_cpu(zen3 + "\n" + zen4)["cpu_isa"] == "avx2"
    assert describe_cpu("Features\t: fp asimd\n")["cpu_isa"] == "asimd"  # aarch64 names its flags so
    assert describe_cpu("") == {"cpu_model": "?", "cpu_family_model": "?", "cpu_isa": "?"}


def test_data_flag_trains_on_an_idx_folders_images_scaled_to_unit_range(tmp_path):
    """--data: the first training images of an IDX folder (here one the test writes), whole batches,
    each pixel its byte / 255; a folder with too few images is refused by name."""
    import numpy as np
    from test_data import make_idx_folder

    from benchmarks.common import training_data

    arrays = make_idx_folder(tmp_path / "idx", n_train=30)
    images, labels = training_data(25, 4, data=str(tmp_path / "idx"))  # 6 whole batches of 4
    assert images.shape == (24, 28, 28, 1) and images.dtype == np.float32
    np.testing.assert_array_equal(np.rint(images[..., 0] * 255).astype(np.uint8), arrays["train"][0][:24])
    assert images.min() >= 0 and images.max() <= 1
    np.testing.assert_array_equal(labels, arrays["train"][1][:24])
    with pytest.raises(SystemExit, match="30 training images .* needs 40"):
        training_data(40, 1, data=str(tmp_path / "idx"))


@pytest.mark.parametrize("batch, rows", [(4, 7), (64, 14)])  # both library paths: split_matmul, wide_matmul
def test_the_blocked_front_end_lead_computes_the_library_front_ends_gradients(batch, rows):
    from benchmarks.blocked_front_end import measure

    result = measure(batch, rows, steps=1, repeats=1)
    # Two implementations (autodiff of conv/ReLU/dense against the hand-written blocked VJP) agree.
    assert result["max_rel_grad_diff"] < 1e-5
    assert result["library_ms"] > 0 and result["blocked_ms"] > 0


def test_nll_eval_scores_the_same_bits_with_the_same_weights_as_pytorch(tmp_path):
    """benchmarks/nll_eval.py: the PyTorch reference, given the run's weights and the saved bits,
    estimates the same -log p(x) as cvae_jax (to Monte Carlo noise), so its timing compares like with like."""
    pytest.importorskip("torch", reason="needs PyTorch, the [compare] extra: pip install -e '.[compare]'")
    from benchmarks import nll_eval
    from cvae_jax.cli import main

    workdir = tmp_path / "vae"
    overrides = ["model.latent_dim=4", "model.encoder_hidden=32", "model.decoder_hidden=32", "data.binarize=true"]
    args = ["train", "--model", "vae", "--epochs", "1", "--workdir", str(workdir), "--no-progress"]
    assert main([*args, *[f"--set={o}" for o in overrides]]) == 0
    data_file = tmp_path / "bits.npz"
    nll_eval.export(str(workdir), 200, data_file)
    ours = nll_eval.run_jax(str(workdir), str(data_file), k=200, chunk=20, batch=100)
    theirs = nll_eval.run_torch(str(data_file), k=200, chunk=20, batch=100)
    assert abs(ours["nll"] - theirs["nll"]) < 0.01 * ours["nll"]
    assert 0 < ours["nll"] < 784 * np.log(2)  # better than coin flips for every pixel


def test_the_pytorch_resnet_vae_is_the_same_model_and_likelihood():
    """benchmarks/reference_torch_images.py: the same parameter count as cvae_jax's --preset resnet
    model, and the same discretized logistic mixture -log p(x) on the same parameters."""
    torch = pytest.importorskip("torch")
    import jax
    import jax.numpy as jnp

    from benchmarks.reference_torch_images import ResNetVAE, discretized_logistic_mixture_nll
    from cvae_jax.config import get_config
    from cvae_jax.core import likelihoods
    from cvae_jax.core.models import build_model

    shape = (32, 32, 3)
    model = build_model(get_config("vae", "resnet").model, shape)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape))))
    ours = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    theirs = sum(p.numel() for p in ResNetVAE(shape).parameters())
    assert ours == theirs
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 8, 8, 3)) / 255.0
    raw = rng.normal(size=(2, 8, 8, 3 * 3 * 4)).astype(np.float32)  # K = 4 components, NHWC
    nll_jax = -likelihoods.log_likelihood(
        jnp.asarray(x, jnp.float32), likelihoods.from_decoder(jnp.asarray(raw), "discretized_logistic", 4)
    )
    nll_torch = discretized_logistic_mixture_nll(
        torch.from_numpy(x.transpose(0, 3, 1, 2)).float(), torch.from_numpy(raw.transpose(0, 3, 1, 2).copy()), 4
    )
    np.testing.assert_allclose(np.asarray(nll_jax), nll_torch.numpy(), rtol=1e-5)


def test_the_pytorch_sprites_vae_is_the_same_model():
    """benchmarks/reference_torch_images.SpritesVAE: the parameter count of cvae_jax's --preset sprites
    model, and, with its weights copied over, the same encoder outputs (4 x 4 stride-2 convs padded
    (1, 1) in both)."""
    torch = pytest.importorskip("torch")
    import jax
    import jax.numpy as jnp

    from benchmarks.reference_torch_images import SpritesVAE
    from cvae_jax.config import get_config
    from cvae_jax.core.models import build_model

    shape = (64, 64, 1)
    model = build_model(get_config("vae", "sprites").model, shape)
    params = model.init(jax.random.key(0), jnp.zeros((1, *shape)))
    theirs = SpritesVAE(shape)
    assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params)) == sum(p.numel() for p in theirs.parameters())
    enc = jax.tree.map(np.array, params["params"]["encoder"])  # writable copies for torch.from_numpy
    with torch.no_grad():
        for i, conv in enumerate(theirs.enc):
            conv.weight.copy_(torch.from_numpy(enc[f"Conv_{i}"]["kernel"].transpose(3, 2, 0, 1).copy()))
            conv.bias.copy_(torch.from_numpy(enc[f"Conv_{i}"]["bias"]))
        dense = enc["Dense_0"]["kernel"].reshape(4, 4, 64, 256).transpose(2, 0, 1, 3).reshape(1024, 256)
        theirs.enc_dense.weight.copy_(torch.from_numpy(dense.T.copy()))
        theirs.enc_dense.bias.copy_(torch.from_numpy(enc["Dense_0"]["bias"]))
        head = np.concatenate([enc["mean"]["kernel"], enc["log_var"]["kernel"]], axis=1)
        theirs.head.weight.copy_(torch.from_numpy(head.T.copy()))
        theirs.head.bias.copy_(torch.from_numpy(np.concatenate([enc["mean"]["bias"], enc["log_var"]["bias"]])))
        x = np.random.default_rng(0).integers(0, 2, (3, *shape)).astype(np.float32)
        h = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        for conv in theirs.enc:
            h = torch.relu(conv(h))
        mean_t, log_var_t = theirs.head(torch.relu(theirs.enc_dense(h.flatten(1)))).chunk(2, dim=1)
    mean, log_var = model.apply(params, jnp.asarray(x), method=model.encode)
    np.testing.assert_allclose(np.asarray(mean), mean_t.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(log_var), log_var_t.numpy(), rtol=1e-4, atol=1e-5)
