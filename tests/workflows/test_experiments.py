"""The experiment runner: a tiny plan end to end, Delta_m and std by hand, bad plans."""

import json
import os

import numpy as np
import pytest
from conftest import run_command

from keras_sdmtcnn.config import plans
from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.runs import results
from keras_sdmtcnn.workflows import experiments

TINY_BASE = """
data:
  format: scenes
  tasks: [depth]
  image_size: [32, 32]
  scenes: {{num_train: 8, num_val: 4, height: 32, width: 32, seed: 7, cache_dir: {cache}}}
model:
  width_multiplier: 0.0625
  bottleneck_filters: 256
  student_filters: [256, 128, 128, 128]
training: {{epochs: 2, batch_size: 4, learning_rate: 0.005}}
output: {{tensorboard: false}}
"""

PLAN = """
name: tiny
out_dir: {out}
seeds: [0]
last_epochs: 2
reference: {{depth: single}}
runs:
  - name: single
    recipe: single.yaml
    label: Single task
  - name: sd
    recipe: sd.yaml
    label: SD-MTCNN
  - name: b3
    recipe: b3.yaml
    label: Traditional KD
  - name: lb
    recipe: lb.yaml
    label: Li & Bilen
    set: ["objective.experts={{depth: ${{run:single}}}}"]
"""


def write_recipes(folder):
    (folder / "base.yaml").write_text(TINY_BASE.format(cache=folder / "cache"))
    recipes = {
        "single": "objective: {name: teacher_only}",
        "sd": "objective: {name: separate}",
        "b3": "objective: {name: separate, stage1_network: train}",
        "lb": "objective: {name: separate, kd_weight: 0.0, experts: {depth: nowhere}}",
    }
    for name, body in recipes.items():
        (folder / f"{name}.yaml").write_text(f"base: base.yaml\n{body}\n")


@pytest.fixture(scope="module")
def finished_plan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plan")
    write_recipes(folder)
    plan = folder / "plan.yaml"
    plan.write_text(PLAN.format(out=folder / "out"))
    result = run_command("experiments", str(plan))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return folder, plan, result


def test_tiny_plan_writes_table_csv_and_figure(finished_plan):
    folder, plan, result = finished_plan
    out = folder / "out"
    table = (out / "results.md").read_text()
    for row in ("| Single task | Teacher |", "| SD-MTCNN | Teacher |", "| SD-MTCNN | Student |",
                "| Traditional KD | Student |", "| Li & Bilen | Student |"):
        assert row in table
    assert "depth Abs ↓" in table and "Δm % ↑" in table
    lines = (out / "results.csv").read_text().splitlines()
    assert lines[0].startswith("method,model,seeds,statistic,depth Abs ↓,depth Abs ↓ std")
    assert lines[0].endswith("delta_m_percent_libmtl,delta_m_percent_libmtl std")
    assert len(lines) == 1 + 2 * (1 + 3 * 2)  # last epoch, then the mean of the last 2
    assert "### Last epoch" in table and "### Mean of the last 2 epochs" in table
    assert "metrics pooled over the split's pixels" in table and "LibMTL" in table
    assert (out / "curves.png").stat().st_size > 10_000
    # The table's numbers are the runs' last-epoch validation metrics.
    with open(out / "sd" / "seed-0" / "metrics.json") as f:
        last = json.load(f)[-1]
    assert f"{last['val_depth_student_abs_err']:.4f}" in table
    # Running the plan again trains nothing and gives the same table.
    again = run_command("experiments", str(plan), "--quiet")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "results.md").read_text().split("\n", 2)[2] == table.split("\n", 2)[2]


def test_baseline3_stage2_leaves_the_stage1_network_unchanged(finished_plan):
    from keras_sdmtcnn.training.saving import load_model

    folder, _, _ = finished_plan
    run = folder / "out" / "b3" / "seed-0"
    stage1 = load_model(run / "stage1_teacher" / "model.keras")
    stage2 = load_model(run / "model.keras")
    teacher1 = stage1.teacher_model()
    teacher2 = stage2.teacher_model()
    assert len(teacher1.weights) == len(teacher2.weights) > 0
    by_path = {w.path: w.numpy() for w in teacher1.weights}
    for w in teacher2.weights:  # kernels and BatchNorm moving statistics alike
        np.testing.assert_array_equal(w.numpy(), by_path[w.path])
    with open(run / "metrics.json") as f:
        history = json.load(f)
    with open(run / "stage1_teacher" / "metrics.json") as f:
        stage1_last = json.load(f)[-1]
    # Stage 2 evaluates the frozen Teacher every epoch: always stage 1's result.
    for record in history:
        assert record["val_depth_teacher_abs_err"] == pytest.approx(
            stage1_last["val_depth_teacher_abs_err"], rel=1e-5)


def fake_run(root, name, seed, tasks, values, branches=("teacher", "student")):
    """A finished run directory whose last epoch has the given metric values."""
    run = root / name / f"seed-{seed}"
    run.mkdir(parents=True)
    record = {"epoch": 1}
    for branch in branches:
        for (task, metric), v in values.items():
            record[f"val_{task}_{branch}_{metric}"] = v
    (run / "metrics.json").write_text(json.dumps([record]))
    (run / "run.json").write_text(json.dumps({"status": "complete", "seconds": 60.0}))


def test_delta_m_and_std_match_a_hand_computation(tmp_path):
    ref = {("semantic", "miou"): 0.40, ("semantic", "pixel_acc"): 0.80,
           ("depth", "abs_err"): 0.50, ("depth", "rel_err"): 0.20}
    method = {0: {("semantic", "miou"): 0.44, ("semantic", "pixel_acc"): 0.76,
                  ("depth", "abs_err"): 0.45, ("depth", "rel_err"): 0.22},
              1: {("semantic", "miou"): 0.46, ("semantic", "pixel_acc"): 0.80,
                  ("depth", "abs_err"): 0.40, ("depth", "rel_err"): 0.20}}
    for seed in (0, 1):
        fake_run(tmp_path, "single_semantic", seed, ["semantic"],
                 {k: v for k, v in ref.items() if k[0] == "semantic"})
        fake_run(tmp_path, "single_depth", seed, ["depth"],
                 {k: v for k, v in ref.items() if k[0] == "depth"})
        fake_run(tmp_path, "method", seed, ["semantic", "depth"], method[seed])

    # By hand: semantic (+10% mIoU, -5% PixAcc) -> +2.5%; depth (abs 10% lower
    # is +10%, rel 10% higher is -10%) -> 0; Delta_m = 1.25%. Seed 1:
    # semantic (+15%, 0) -> 7.5%, depth (+20%, 0) -> 10%; Delta_m = 8.75%.
    def as_nested(values):
        out = {}
        for (task, metric), v in values.items():
            out.setdefault(task, {})[metric] = v
        return out

    reference = as_nested(ref)
    assert results.delta_m(as_nested(method[0]), reference) == pytest.approx(1.25)
    assert results.delta_m(as_nested(method[1]), reference) == pytest.approx(8.75)

    class FakeRecipe:
        def __init__(self, tasks, name="separate"):
            self.data = type("D", (), {"tasks": tasks})()
            self.objective = type("O", (), {"name": name})()

    plan = plans.Plan("fake", str(tmp_path), [0, 1], [],
                            {"semantic": "single_semantic", "depth": "single_depth"},
                            [plans.PlanRun("single_semantic", "", "S", []),
                             plans.PlanRun("single_depth", "", "D", []),
                             plans.PlanRun("method", "", "Method", [])])
    recipes = {}
    for seed in (0, 1):
        recipes[("single_semantic", seed)] = FakeRecipe(["semantic"], "teacher_only")
        recipes[("single_depth", seed)] = FakeRecipe(["depth"], "teacher_only")
        recipes[("method", seed)] = FakeRecipe(["semantic", "depth"])
    rows = results.collect(plan, recipes)
    assert [(r["method"], r["branch"]) for r in rows] == [
        ("Single task", "Teacher"), ("Method", "Teacher"), ("Method", "Student")]
    assert rows[0]["delta_m"] == [pytest.approx(0.0), pytest.approx(0.0)]
    assert rows[1]["delta_m"] == [pytest.approx(1.25), pytest.approx(8.75)]
    table = results.markdown(rows)
    std = np.std([1.25, 8.75], ddof=1)
    assert f"5.00 ± {std:.2f}" in table
    assert f"0.4500 ± {np.std([0.44, 0.46], ddof=1):.4f}" in table  # mIoU over seeds
    text = results.write_results(plan, recipes)
    assert "2 seed(s)" in text and "6.0 min" in text  # 3 runs x 2 seeds x 60 s
    assert (tmp_path / "curves.png").exists() and (tmp_path / "results.csv").exists()
    # seeds.png plots each row's headline metric per seed: the table's values.
    spread = results.seed_spread(rows)
    assert list(spread) == ["semantic", "depth"]
    assert [label for label, _ in spread["semantic"]] == [
        "Single task (T)", "Method (T)", "Method (S)"]
    assert spread["semantic"][1][1] == [v["semantic"]["miou"] for v in rows[1]["values"]]
    assert (tmp_path / "seeds.png").stat().st_size > 5_000


NORMAL_REF = {"angle_mean": 20.0, "angle_median": 16.0, "within_11_25": 0.40,
              "within_22_5": 0.60, "within_30": 0.70, "cosine": 0.90}
NORMAL_ROW = {"angle_mean": 18.0, "angle_median": 16.0, "within_11_25": 0.44,
              "within_22_5": 0.60, "within_30": 0.77, "cosine": 0.10}


def test_delta_m_conventions_against_hand_computed_tables():
    reference = {"semantic": {"miou": 0.40, "pixel_acc": 0.80},
                 "depth": {"abs_err": 0.50, "rel_err": 0.20},
                 "normal": dict(NORMAL_REF)}
    row = {"semantic": {"miou": 0.44, "pixel_acc": 0.76},
           "depth": {"abs_err": 0.45, "rel_err": 0.22},
           "normal": dict(NORMAL_ROW)}
    # By hand. semantic: +10%, -5% -> +2.5%. depth: +10%, -10% -> 0%.
    # normal (five metrics; the cosine, 89% worse, must not count): mean
    # 10% lower -> +10%, median 0, <11.25 +10%, <22.5 0, <30 +10% -> +6%.
    # LibMTL: (2.5 + 0 + 6) / 3 = 2.8333; higher is better.
    assert results.delta_m(row, reference) == pytest.approx(8.5 / 3)
    # CAGrad / Nash-MTL: the nine changes (+10, -5, +10, -10, +10, 0, +10, 0,
    # +10; better is positive here) average +35/9, reported with the sign
    # flipped: -3.8889, lower is better.
    assert results.delta_m(row, reference, "cagrad") == pytest.approx(-35 / 9)
    with pytest.raises(ValueError, match="convention"):
        results.delta_m(row, reference, "nash")


def test_mean_of_the_last_epochs_and_too_many_epochs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    history = [{"epoch": e, "val_depth_teacher_abs_err": v} for e, v in
               enumerate([0.9, 0.6, 0.5, 0.4], start=1)]
    (run / "metrics.json").write_text(json.dumps(history))
    assert results.summary_record(run)["val_depth_teacher_abs_err"] == 0.4
    assert results.summary_record(run, 3)["val_depth_teacher_abs_err"] == pytest.approx(0.5)
    with pytest.raises(UserError, match="last_epochs is 5.*at most 4"):
        results.summary_record(run, 5)


def test_bad_plan_keys_name_the_key(tmp_path):
    write_recipes(tmp_path)
    for body, match in (("last_epochs: 0", "last_epochs must be an integer >= 1"),
                        ("delta_m: nash", "delta_m must be one of libmtl, cagrad"),
                        ("seeds: [0, 0]", "seeds must be a non-empty list of distinct")):
        plan = tmp_path / "plan.yaml"
        plan.write_text(f"out_dir: {tmp_path / 'out'}\n{body}\nruns:\n  - recipe: single.yaml\n")
        with pytest.raises(UserError, match=match):
            plans.load_plan(str(plan))
    plan.write_text(f"out_dir: {tmp_path / 'out'}\nlast_epochs: 3\nruns:\n"
                    "  - recipe: single.yaml\n")
    with pytest.raises(UserError, match="last_epochs is 3, but run single trains 2 epochs"):
        experiments.resolve_recipes(plans.load_plan(str(plan)))


def test_a_plan_naming_a_missing_recipe_fails_before_training(tmp_path):
    write_recipes(tmp_path)
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"out_dir: {tmp_path / 'out'}\nruns:\n  - recipe: single.yaml\n"
                    "  - name: ghost\n    recipe: nothere.yaml\n")
    with pytest.raises(UserError,
                       match=r"runs\[1\] \(ghost\): recipe nothere.yaml does not exist"):
        plans.load_plan(str(plan))
    assert not (tmp_path / "out").exists()
    result = run_command("experiments", str(plan))
    assert result.returncode != 0 and "nothere.yaml does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_plan_whose_feature_teacher_trains_other_tasks_fails_before_training(tmp_path):
    write_recipes(tmp_path)
    (tmp_path / "two.yaml").write_text(
        "base: base.yaml\ndata: {tasks: [semantic, depth]}\nobjective: {name: teacher_only}\n")
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"out_dir: {tmp_path / 'out'}\nruns:\n  - recipe: two.yaml\n  - recipe: lb.yaml\n"
        '    set: ["objective.experts={depth: ${run:two}}"]\n')
    loaded = plans.load_plan(str(plan))
    with pytest.raises(UserError, match=r"trained on tasks \['semantic', 'depth'\], not on "
                                        r"\[depth\] alone"):
        experiments.resolve_recipes(loaded)
    plan.write_text(
        f"out_dir: {tmp_path / 'out'}\nruns:\n  - recipe: lb.yaml\n"
        '    set: ["objective.experts={depth: ${run:single}}"]\n  - recipe: single.yaml\n')
    with pytest.raises(UserError, match=r"must name a run listed before it"):
        experiments.resolve_recipes(plans.load_plan(str(plan)))
    assert not (tmp_path / "out").exists()


def test_feature_distillation_recipe_with_bad_teachers_fails_before_training(tmp_path):
    write_recipes(tmp_path)
    recipe = str(tmp_path / "lb.yaml")
    result = run_command("fit", recipe, "--run-dir", str(tmp_path / "run"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "objective.experts.depth: the run nowhere does not exist" in \
        result.stderr
    # A finished teacher at another input size.
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "run.json").write_text(json.dumps({"status": "complete"}))
    (teacher / "model.keras").write_text("")
    (teacher / "recipe.yaml").write_text(
        "data: {tasks: [depth], image_size: [64, 64]}\n")
    result = run_command("fit", recipe, "--run-dir", str(tmp_path / "run"),
                         "--set", f"objective.experts={{depth: {teacher}}}")
    assert "was trained with data.image_size [64, 64], this recipe has [32, 32]" in result.stderr
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_holdout_plan_reports_the_test_split_at_the_chosen_epoch(tmp_path):
    from fake_data import MTAN_SIZE, write_layout

    H, W = MTAN_SIZE
    root = tmp_path / "nyu"
    write_layout(str(root), "nyuv2", n_train=6, n_val=2)
    (tmp_path / "holdout.yaml").write_text(
        f"data: {{format: nyuv2, root: {root}, image_size: [{H}, {W}], tasks: [depth], "
        "val_source: holdout, holdout_fraction: 0.34}\n"
        "model: {width_multiplier: 0.0625, bottleneck_filters: 64}\n"
        "training: {epochs: 2, batch_size: 2}\n"
        "output: {tensorboard: false}\n")
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"out_dir: {tmp_path / 'out'}\nruns:\n  - name: h\n    recipe: holdout.yaml\n")
    text = experiments.run_experiments(str(plan), verbose=0)
    run = tmp_path / "out" / "h" / "seed-0"
    test = json.loads((run / "test_at_best.json").read_text())
    history = json.loads((run / "metrics.json").read_text())
    chosen = min(history, key=lambda r: r["val_loss"])
    assert test["epoch"] == chosen["epoch"] and test["monitor"] == "val_loss"
    # Independently: the best checkpoint scored on the real val split.
    from keras_sdmtcnn.workflows.notebook import load_run

    model, _, datasets = load_run(str(run / "checkpoints" / "best.keras"),
                                  str(run / "recipe.yaml"), ["data.val_source=val"])
    again = model.evaluate(datasets["val"], return_dict=True, verbose=0)
    assert test["metrics"]["depth_teacher_abs_err"] == pytest.approx(
        float(again["depth_teacher_abs_err"]), rel=1e-6)
    assert "### Test split, at the epoch the held-out split chose (best val_loss)" in text
    assert f"{test['metrics']['depth_teacher_abs_err']:.4f}" in text.split("### Test split")[1]


def test_a_plan_seed_in_set_and_a_partial_delta_m_reference_are_refused(tmp_path):
    write_recipes(tmp_path)
    (tmp_path / "two.yaml").write_text(
        "base: base.yaml\ndata: {tasks: [semantic, depth]}\nobjective: {name: separate}\n")
    plan = tmp_path / "plan.yaml"
    # A seed in `set` would be replaced by the plan's seeds without a word.
    plan.write_text(f"out_dir: {tmp_path / 'out'}\nset: [training.seed=7]\nruns:\n"
                    "  - recipe: single.yaml\n")
    with pytest.raises(UserError, match=r"set sets training.seed \(training.seed=7\), which "
                                        r"the plan's seeds would replace"):
        plans.load_plan(str(plan))
    plan.write_text(f"out_dir: {tmp_path / 'out'}\nruns:\n  - recipe: single.yaml\n"
                    "    set: [training.seed=3]\n")
    with pytest.raises(UserError, match=r"runs\[0\].set \(single\) sets training.seed"):
        plans.load_plan(str(plan))
    # Delta_m against a reference that lacks one of a run's tasks: refused unless asked.
    body = (f"out_dir: {tmp_path / 'out'}\nreference: {{depth: single}}\nruns:\n"
            "  - recipe: single.yaml\n  - recipe: two.yaml\n")
    plan.write_text(body)
    with pytest.raises(UserError, match="Plan run two trains semantic, which the Delta_m "
                                        "reference lacks .it has depth."):
        experiments.resolve_recipes(plans.load_plan(str(plan)))
    plan.write_text(body + "delta_m_partial: true\n")
    loaded = plans.load_plan(str(plan))
    assert loaded.delta_m_partial and len(experiments.resolve_recipes(loaded)) == 2
