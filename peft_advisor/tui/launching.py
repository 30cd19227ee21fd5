"""From a recipe on screen to a running trainer: fill in the estimate, save, start.

Kept apart from the screen so tests can call it and so the rules sit in one place: never start
a second run in a folder that already holds one, and always launch from a file on disk (the
trainer reads the recipe, never the UI's memory).
"""

from __future__ import annotations

from pathlib import Path

from peft_advisor.core import recipe as rc
from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.sources import expand_home


def with_estimate(recipe: rc.Recipe) -> rc.Recipe:
    """The recipe with the estimate for its current settings (what the monitor compares against)."""
    try:
        from peft_advisor.core.estimate import estimate
        from peft_advisor.core.model_spec import load_model_spec

        spec = load_model_spec(recipe.model.id)
        est = estimate(spec, rc.settings_from_recipe(recipe))
    except (ImportError, UserError):
        return recipe  # a Hub id or a model we cannot read offline: launch without an estimate
    return rc.updated(recipe, {
        "estimate.peak_bytes": int(est.peak_bytes),
        "estimate.adapter_bytes": int(est.adapter_bytes),
        "estimate.trainable_params": int(est.trainable_params),
    })


def recipe_file(run_dir: str | Path) -> Path:
    """Where a recipe's file belongs: beside its run folder (`runs/<name>.toml` for `runs/<name>/`),
    so exported and launched recipes sit with the runs they describe, not wherever the app started."""
    run_dir = Path(run_dir)
    return run_dir.parent / f"{run_dir.name or 'recipe'}.toml"


def launch_recipe(services, recipe: rc.Recipe):
    """Save the recipe beside its run folder and start the trainer; returns (run_dir, launched)."""
    run_dir = expand_home(recipe.output.dir, ExitCode.USAGE, "output.dir")
    if run_dir.exists():
        raise UserError(f"output.dir: {run_dir} exists already; choose another output dir", ExitCode.EXISTS)
    recipe = with_estimate(recipe)
    recipe_path = recipe_file(run_dir)
    rc.save(recipe, recipe_path, force=True, header="Launched from the peft-advisor terminal UI.")
    return run_dir, services.start_run(recipe_path, run_dir)  # raises UserError when it cannot start
