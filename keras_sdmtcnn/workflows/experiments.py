"""Running a plan of recipes: what ``python -m keras_sdmtcnn.experiments`` calls.

A plan (``config/plans.py``) lists runs, seeds and the single-task
reference of Delta_m. Every recipe is loaded and every teacher it names is
checked before the first run starts. Runs train in order into
``OUT_DIR/NAME/seed-S``; a finished run is not trained again and an
interrupted one resumes, so running the plan again after a crash finishes
it. The tables and curves are written by ``runs/results.py``.
"""

import os
import time

from keras_sdmtcnn.config import load_plan, load_recipe, recipe_to_dict
from keras_sdmtcnn.config.plans import RUN_REF, check_delta_m, check_seeds
from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.runs.pretrained import check_pretrained, finished_run_recipe
from keras_sdmtcnn.runs.results import write_results
from keras_sdmtcnn.runs.rundir import RunDir


def resolve_recipes(plan):
    """``{(run name, seed): Recipe}``, every recipe loaded and checked, teachers included."""
    recipes, order = {}, [r.name for r in plan.runs]
    for seed in plan.seeds:
        planned = {}  # run directory -> recipe dict, of runs trained before this one
        for position, run in enumerate(plan.runs):
            def substitute(text, run=run, position=position):
                def repl(match):
                    target = match.group(1)
                    if target not in order[:position]:
                        raise UserError(
                            f"Plan run {run.name}: ${{run:{target}}} must name a run listed "
                            f"before it ({', '.join(order[:position]) or 'none'}).")
                    return os.path.abspath(plan.run_dir(target, seed))
                return RUN_REF.sub(repl, text)

            overrides = [substitute(o) for o in plan.overrides + run.overrides]
            overrides.append(f"training.seed={seed}")
            try:
                recipe = load_recipe(run.recipe, overrides)
            except UserError as e:
                raise UserError(f"Plan run {run.name}: {e}") from None

            def lookup(run_dir, key, planned=planned, run=run):
                known = planned.get(os.path.abspath(run_dir))
                if known is not None:
                    return known
                try:
                    return finished_run_recipe(run_dir, key)
                except UserError as e:
                    raise UserError(f"Plan run {run.name}: {e}") from None

            check_pretrained(recipe, lookup)
            recipes[(run.name, seed)] = recipe
            planned[os.path.abspath(plan.run_dir(run.name, seed))] = recipe_to_dict(recipe)
    if plan.last_epochs is not None:
        for (name, seed), recipe in recipes.items():
            if plan.last_epochs > recipe.training.epochs:
                raise UserError(
                    f"Plan key last_epochs is {plan.last_epochs}, but run {name} trains "
                    f"{recipe.training.epochs} epochs: set last_epochs to at most "
                    f"{recipe.training.epochs}.")
    for task, name in plan.reference.items():
        tasks = list(recipes[(name, plan.seeds[0])].data.tasks)
        if tasks != [task]:
            raise UserError(
                f"Plan reference.{task}: run {name} trains {tasks}, not [{task}] alone.")
    if plan.reference and not plan.delta_m_partial:
        for run in plan.runs:
            extra = [t for t in recipes[(run.name, plan.seeds[0])].data.tasks
                     if t not in plan.reference]
            if extra:
                raise UserError(
                    f"Plan run {run.name} trains {', '.join(extra)}, which the Delta_m "
                    f"reference lacks (it has {', '.join(plan.reference)}): add a single-task "
                    "run of each to `reference`, or set `delta_m_partial: true` to compute "
                    "Delta_m over the reference's tasks alone.")
    return recipes


def run_plan(plan, recipes, verbose=1):
    """Trains every run that is not finished yet, in order, seed by seed."""
    import keras

    from keras_sdmtcnn.workflows.train import fit

    total = len(plan.runs) * len(plan.seeds)
    done = 0
    for seed in plan.seeds:
        for run in plan.runs:
            done += 1
            run_dir = plan.run_dir(run.name, seed)
            recipe = recipes[(run.name, seed)]
            if RunDir(run_dir).is_complete():
                if verbose:
                    print(f"[{done}/{total}] {run.name} seed {seed}: finished earlier ({run_dir})")
            else:
                if verbose:
                    print(f"[{done}/{total}] {run.name} seed {seed}: training in {run_dir}")
                recipe.output.verbose = verbose
                fit(recipe, run_dir)
                keras.backend.clear_session()
            if recipe.data.val_source == "holdout" and RunDir(run_dir).read_test_at_best() is None:
                test_at_selected_epoch(recipe, run_dir)
                keras.backend.clear_session()


def test_at_selected_epoch(recipe, run_dir):
    """Scores the checkpoint the held-out split chose on the test split (``data.val_source: val``).

    A run that validates on a held-out part of train keeps, in
    ``checkpoints/best.keras``, the epoch that ``output.monitor`` found best
    there; its test-split metrics are what a paper should quote.
    """
    import copy

    from keras_sdmtcnn.data.datasets import build_datasets
    from keras_sdmtcnn.training.saving import load_model

    run = RunDir(run_dir)
    monitor = recipe.output.monitor
    epoch = run.best_epoch(monitor)
    if epoch is None or not os.path.exists(run.best_checkpoint):
        raise UserError(f"{run_dir}: no best checkpoint to score on the test split; remove "
                        "that run directory and run the plan again (it trains the run anew).")
    test_recipe = copy.deepcopy(recipe)
    test_recipe.data.val_source = "val"
    datasets, _ = build_datasets(test_recipe, verbose=False, splits=("val",))
    model = load_model(run.best_checkpoint)
    model.set_evaluation_convention(recipe.evaluation.convention)
    results = model.evaluate(datasets["val"], return_dict=True, verbose=0)
    run.write_test_at_best({k: float(v) for k, v in results.items()}, epoch, monitor)


def run_experiments(plan_path, verbose=1, seeds=None, delta_m=None):
    """Loads, checks and runs a plan, then writes its results; returns the Markdown.

    ``seeds`` and ``delta_m`` replace the plan's own (the command's
    ``--seeds`` and ``--delta-m``).
    """
    started = time.time()
    plan = load_plan(plan_path)
    if seeds is not None:
        plan.seeds = check_seeds(list(seeds), "--seeds")
    if delta_m is not None:
        plan.delta_m = check_delta_m(delta_m, "--delta-m")
    recipes = resolve_recipes(plan)
    if verbose:
        print(f"Plan {plan.name}: {len(plan.runs)} runs x {len(plan.seeds)} seed(s) "
              f"into {plan.out_dir}")
    run_plan(plan, recipes, verbose)
    text = write_results(plan, recipes, time.time() - started)
    if verbose:
        print(text)
        print(f"Wrote {plan.out_dir}/results.md, results.csv and curves.png")
    return text


def stopped(signal_name):
    """The line of a plan stopped by a signal (its supervising parent prints it)."""
    return (f"experiments: stopped by {signal_name}. Finished runs are kept and the run in "
            "progress keeps its last checkpoint: the same command resumes the plan.")


def died(signal_name):
    """The ``error:`` message of a plan whose training process died by ``signal_name``."""
    from keras_sdmtcnn.process.memory import describe_limit

    limit = describe_limit()
    return (f"the plan's training process died ({signal_name}), most often from memory "
            "running out" + (f" (this process may use {limit})" if limit else "") + ". Try a "
            "smaller training.batch_size in the plan's set, or free memory; the same command "
            "resumes the plan from the last checkpoint of the run in progress.")
