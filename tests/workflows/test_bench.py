"""bench on a tiny recipe: every figure is written (the fresh-process comparisons opt-in)."""

import json

import pytest
from conftest import REPO, run_command


def _tiny_recipe(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        "data: {format: scenes, tasks: [semantic, depth], image_size: [32, 32],\n"
        f"       scenes: {{num_train: 4, num_val: 2, height: 32, width: 32, cache_dir: {tmp_path}}}}}\n"
        "model: {width_multiplier: 0.0625, bottleneck_filters: 64, encoder_depths: [1, 1, 1, 1]}\n"
        "training: {batch_size: 2}\n")
    return recipe


def _bench(tmp_path, *flags):
    recipe = _tiny_recipe(tmp_path)
    out = tmp_path / "bench.json"
    # int8 latency (a calibrated conversion of each branch) only in the full run.
    quantize = ["none"] if "--quick" in flags else ["none", "int8"]
    result = run_command("bench", "--recipe", str(recipe), "--steps", "1", "--quantize",
                         *quantize, "--out", str(out), *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), result


@pytest.mark.slow
def test_bench_compares_xla_and_the_allocator_in_fresh_processes(tmp_path):
    bench, result = _bench(tmp_path)
    assert bench["xla"]["separate_seconds"] > 0
    assert bench["allocator"]["default_seconds"] > 0 and bench["allocator"]["no_trim_seconds"] > 0
    assert bench["allocator"]["env"]["MALLOC_MMAP_MAX_"] == "0"
    assert "| XLA `separate` step |" in result.stdout
    assert "| student | tflite | int8 |" in result.stdout
    precision = bench["precision"]
    assert precision["none"]["precision"] == "float32"
    assert precision["mixed_bfloat16"]["precision"] == "mixed_bfloat16"
    assert precision["auto_picks"][0] in ("float32", "mixed_bfloat16")
    assert "| `separate` step, fresh process: float32 / mixed_bfloat16 |" in result.stdout
    assert "| `training.mixed_precision: auto` picks |" in result.stdout


def test_the_train_step_alone_runs_in_the_precision_asked_for(tmp_path):
    out = tmp_path / "step.json"
    result = run_command("bench", "--recipe", str(_tiny_recipe(tmp_path)), "--steps", "1",
                         "--train-step-only", "--set", "training.mixed_precision=mixed_bfloat16",
                         "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    step = json.loads(out.read_text())
    assert step["precision"] == "mixed_bfloat16"
    assert step["first_step_seconds"] > step["seconds"] > 0 and step["gflops"] > 0


def test_bench_runs_on_a_tiny_recipe_and_writes_every_field(tmp_path):
    bench, result = _bench(tmp_path, "--quick")
    assert set(bench) >= {"machine", "size", "train_step", "conv_throughput", "latency",
                          "evaluation_samples_per_s", "input_pipeline_samples_per_s",
                          "peak_memory_mb", "start_up"}
    start = bench["start_up"]
    # The first steps include tracing: longer than a steady step.
    assert start["first_train_step_s"] > start["steady_train_step_s"] > 0
    assert start["first_eval_step_s"] > 0
    assert "| time to first train step / first evaluation step" in result.stdout
    assert "xla" not in bench and "allocator" not in bench
    assert {"cpu", "cores", "tensorflow", "keras"} <= set(bench["machine"])
    for name in ("teacher_only", "separate", "ensemble"):
        assert bench["train_step"][name]["seconds"] > 0
    assert bench["size"]["student"]["flops"] < bench["size"]["teacher"]["flops"]
    runtimes = {(r["branch"], r["runtime"], r["quantize"], r["threads"]) for r in bench["latency"]}
    for branch in ("teacher", "student"):
        assert {(branch, "keras", "none", 0), (branch, "saved_model", "none", 0),
                (branch, "onnxruntime", "none", 1), (branch, "tflite", "none", 2)} <= runtimes
    assert "| student | tflite | none |" in result.stdout
    assert "| `separate` / `teacher_only` |" in result.stdout


# Opt-in (-m slow): two processes building the model at once take a minute of CPU;
# the refusals of --against stay in the default suite.
@pytest.mark.slow
def test_bench_against_a_checkout_times_both_in_alternating_blocks(tmp_path):
    # This checkout against itself: both workers build the same model.
    out = tmp_path / "paired.json"
    result = run_command("bench", "--recipe", str(_tiny_recipe(tmp_path)), "--against", REPO,
                         "--blocks", "3", "--block-steps", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    paired = json.loads(out.read_text())
    assert paired["other"] == REPO and paired["blocks"] == 3 and paired["steps_per_block"] == 2
    for side in ("this", "other"):
        assert len(paired["block_step_s"][side]) == 3
        # The first step traces the step: longer than any steady one.
        assert paired["first_train_step_s"][side] > max(paired["block_step_s"][side]) > 0
    ratios = [o / t for o, t in zip(paired["block_step_s"]["other"],
                                    paired["block_step_s"]["this"])]
    assert paired["speedup_min"] == min(ratios) and paired["speedup_max"] == max(ratios)
    assert "speed-up, other / this" in result.stdout


def test_bench_against_a_folder_that_is_no_checkout_is_one_error_line(tmp_path):
    result = run_command("bench", "--recipe", str(_tiny_recipe(tmp_path)),
                         "--against", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --against {tmp_path}: no keras_sdmtcnn package there; give the root of "
        "another checkout of this project (git worktree add DIR COMMIT)."]


def test_bench_against_a_checkout_that_fails_names_it_in_one_error_line(tmp_path):
    broken = tmp_path / "broken"
    (broken / "keras_sdmtcnn").mkdir(parents=True)
    (broken / "keras_sdmtcnn" / "__init__.py").write_text(
        "raise ImportError('this version cannot be imported')\n")
    result = run_command("bench", "--recipe", str(_tiny_recipe(tmp_path)),
                         "--against", str(broken))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: the train step of {broken} could not")
    assert "this version cannot be imported" in lines[0]
