"""The recipe screen: checks as typed, export and import, errors in place, launch."""

from __future__ import annotations

from pathlib import Path

from tui_support import import_typed, make_app, on_top, press_for_message, recipe_ready, switch_mode, wait_until
from textual.widgets import Input, Static

from peft_advisor.core import recipe as rc


async def type_into(pilot, selector: str, text: str) -> None:
    """Short values are typed key by key; long ones are pasted (the same Input.Changed path).
    Returns once the screen has acted on the field's final value (its Input.Changed bubbles up
    and re-estimates: a fixed pause was not always long enough on a loaded machine)."""
    screen = pilot.app.screen
    field = screen.query_one(selector, Input)
    field.focus()
    field.value = ""
    if len(text) <= 4:
        await pilot.press(*text)
    else:
        field.insert_text_at_cursor(text)
    await wait_until(pilot, lambda: screen.handled.get(field.id) == field.value)


def message(screen) -> str:
    return str(screen.query_one("#file-message", Static).content)


async def test_typing_a_bad_value_shows_the_core_message_and_keeps_the_recipe(workdir):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await switch_mode(pilot, "f3", "recipe")
        screen = app.screen
        before = screen.recipe
        await type_into(pilot, "#f-method-rank", "abc")
        error = str(screen.query_one("#f-method-rank-error", Static).content)
        assert error == 'method.rank: expected an integer, got "abc"'
        assert screen.recipe == before and screen.query_one("#f-method-rank", Input).value == "abc"
        await type_into(pilot, "#f-train-lr", "-1")
        assert "train.lr: must be > 0" in str(screen.query_one("#f-train-lr-error", Static).content)
        await type_into(pilot, "#file-path", "out.toml")
        await press_for_message(pilot, "ctrl+s")
        assert not Path("out.toml").exists() and "fix the field" in message(screen)
        await type_into(pilot, "#f-method-rank", "8")
        assert screen.recipe.method.rank == 8 and screen.recipe.method.alpha == 16
        assert not screen.query_one("#f-method-rank-error").display


async def test_export_then_import_gives_the_same_recipe(workdir):
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await switch_mode(pilot, "f3", "recipe")
        screen = app.screen
        await type_into(pilot, "#f-method-rank", "8")
        await type_into(pilot, "#f-method-targets", "q_proj, v_proj")
        await type_into(pilot, "#f-train-lr", "3e-4")
        await type_into(pilot, "#f-data-path", "data/train.jsonl")
        await type_into(pilot, "#file-path", "mine.toml")
        await press_for_message(pilot, "ctrl+s")
        exported = screen.recipe
        assert "wrote mine.toml" in message(screen)
        assert rc.load("mine.toml") == exported and exported.method.targets == ("q_proj", "v_proj")
        await type_into(pilot, "#f-method-rank", "32")
        assert screen.recipe != exported
        await type_into(pilot, "#file-path", "mine.toml")
        await import_typed(pilot)
        assert screen.recipe == exported and screen.query_one("#f-method-rank", Input).value == "8"
        assert "imported" in message(screen)


async def test_a_bad_recipe_shows_every_error_in_place_and_changes_nothing(workdir):
    Path("bad.toml").write_text('version = 1\n[method]\nname = "lora"\nrnak = 8\n[train]\nlr = "fast"\n')
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await switch_mode(pilot, "f3", "recipe")
        screen = app.screen
        await type_into(pilot, "#f-method-rank", "4")
        before = screen.recipe
        await type_into(pilot, "#file-path", "bad.toml")
        await import_typed(pilot)
        shown = message(screen)
        assert "not imported, nothing changed" in shown
        assert "method.rnak: unknown key; did you mean rank? (line 4)" in shown
        assert 'train.lr: expected a number, got "fast" (line 6)' in shown
        assert screen.recipe == before and screen.query_one("#f-method-rank", Input).value == "4"
        assert Path("bad.toml").read_text().count("rnak") == 1  # the file is untouched


MINE = '# mine\n[model]\nid = "mine"\n'


async def test_export_asks_before_overwriting(workdir):
    Path("keep.toml").write_text(MINE)  # a recipe: the only kind of file an overwrite replaces
    from peft_advisor.tui.screens.confirm import ConfirmScreen

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await switch_mode(pilot, "f3", "recipe")
        screen = app.screen
        await type_into(pilot, "#file-path", "keep.toml")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: on_top(app, ConfirmScreen))  # "n" before it would go to the file field
        await pilot.press("n")
        await wait_until(pilot, lambda: app.screen is screen)
        assert Path("keep.toml").read_text() == MINE
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: on_top(app, ConfirmScreen))
        await press_for_message(pilot, "y")  # the answer's callback writes the file, then says so
        assert rc.load("keep.toml") == app.screen.recipe


async def test_launch_starts_the_trainer_and_opens_the_monitor(workdir, launcher):
    app = make_app(launcher)
    async with app.run_test(size=(100, 30)) as pilot:
        await switch_mode(pilot, "f3", "recipe")
        await type_into(pilot, "#f-output-dir", "runs/from-ui")
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: app.current_mode == "monitor")
        monitor = app.screen
        await wait_until(pilot, lambda: monitor.view.done)
        assert str(monitor.run_dir) == "runs/from-ui" and monitor.view.status == "ok"
        assert rc.load("runs/from-ui.toml").output.dir == "runs/from-ui"
        await switch_mode(pilot, "f3", "recipe")
        await press_for_message(pilot, "ctrl+r")  # the same folder again: refused, said where
        assert "runs/from-ui exists already" in message(app.screen)


async def test_odd_file_names_are_one_message_each(workdir):
    """A folder, an empty file, a home folder of no such user, a name that looks like markup."""
    from peft_advisor.tui.screens.confirm import ConfirmScreen

    Path("a-folder").mkdir()
    Path("empty.toml").write_text("")
    Path("[").mkdir()
    Path("[/x]").write_text("mine")  # the file x] in the folder [; `[/x]` as markup is a closing tag
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await switch_mode(pilot, "f3", "recipe")
        screen = app.screen
        for name, key, words in (("a-folder", "ctrl+s", "a-folder: is a folder; give a file name"),
                                 ("empty.toml", "ctrl+o", "empty recipe (no keys)"),
                                 ("~nosuchuser-x9/r.toml", "ctrl+s", "no such user's home folder")):
            await type_into(pilot, "#file-path", name)
            await (import_typed(pilot) if key == "ctrl+o" else press_for_message(pilot, key))
            assert words in message(screen), name
        await type_into(pilot, "#file-path", "[/x]")
        await pilot.press("ctrl+s")
        question = lambda: app.screen.query_one("#question")  # noqa: E731
        # drawn, not only pushed: the name is shown as text, never read as markup
        await wait_until(pilot, lambda: on_top(app, ConfirmScreen) and question().region.area > 0)
        await pilot.press("n")
        await wait_until(pilot, lambda: app.screen is screen)
        assert app.is_running and Path("[/x]").read_text() == "mine"


async def _recipe_for(pilot, app, model: str, method: str, vram: str = "24"):
    from tui_support import wait_until as wait
    from textual.widgets import Input as In

    from peft_advisor.tui.widgets.tradeoff_table import TradeoffTable

    await wait(pilot, lambda: bool(app.screen.query(TradeoffTable)))  # mounted just after the first paint
    for selector, text in (("#in-model", model), ("#in-vram", vram)):
        field = app.screen.query_one(selector, In)
        field.focus()
        field.value = text
    table = app.screen.query_one(TradeoffTable)
    await wait(pilot, lambda: app.screen.inputs is not None and app.screen.inputs.model == model
               and app.screen.inputs.vram_bytes == int(float(vram) * 1024**3) and method in table.rows_by_method)
    table.focus()
    table.move_cursor(row=table.get_row_index(method))
    await pilot.press("enter")
    # the advisor's recipe, loaded: the screen mounts with the default one, which has no budget
    await wait(pilot, lambda: recipe_ready(app) and app.screen.recipe.budget.vram_gib == float(vram))
    return app.screen


async def test_every_edit_re_estimates_the_recipe(workdir):
    from peft_advisor.core.estimate import estimate
    from peft_advisor.core.model_spec import load_model_spec

    app = make_app(gpu=False)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _recipe_for(pilot, app, "qwen2.5-0.5b", "lora")
        before = screen.recipe.estimate.trainable_params
        await type_into(pilot, "#f-method-rank", "64")
        r = screen.recipe
        expected = estimate(load_model_spec("qwen2.5-0.5b"), rc.settings_from_recipe(r))
        assert r.method.rank == 64 and r.method.alpha == 128  # alpha follows the rule, said in the title
        assert r.estimate.trainable_params == expected.trainable_params == 4 * before
        assert r.estimate.peak_bytes == expected.peak_bytes
        title = screen.query_one("#recipe-title", Static)
        await wait_until(pilot, lambda: "alpha 128 (alpha = 2 × rank)" in str(title.content))  # redrawn after a pause
        await type_into(pilot, "#file-path", "r64.toml")
        await press_for_message(pilot, "ctrl+s")
        assert rc.load("r64.toml").estimate.trainable_params == expected.trainable_params


async def test_launching_a_tight_recipe_asks_first(workdir, launcher):
    from peft_advisor.tui.screens.confirm import ConfirmScreen

    app = make_app(launcher, gpu=False)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _recipe_for(pilot, app, "llama-3.1-8b", "qlora", vram="10")  # tight even with the techniques (12 GiB now fits with room)
        assert "tight" in str(screen.query_one("#recipe-title", Static).content)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await wait_until(pilot, lambda: app.current_mode == "recipe" and not isinstance(app.screen, ConfirmScreen))
        assert not Path(screen.recipe.output.dir).exists()


async def test_a_demo_recipe_from_the_app_uses_the_demo_recipes_fast_settings(workdir):
    app = make_app(gpu=False)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _recipe_for(pilot, app, "demo", "lora", vram="8")
        shipped = rc.load(Path(__file__).resolve().parents[2] / "recipes" / "demo" / "lora.toml")
        r = screen.recipe
        for key in ("data.max_seq_len", "data.eval_split", "train.max_steps", "train.eval_every"):
            section, _, name = key.partition(".")
            assert getattr(getattr(r, section), name) == getattr(getattr(shipped, section), name), key
        assert r.estimate.peak_bytes and r.data.max_seq_len == 128


async def test_an_edit_right_after_a_recipe_is_loaded_is_kept(workdir):
    """Loading a recipe writes every field, and their change events arrive later; the screen takes
    them as no-ops because they hold what the recipe holds (by value, not by a loading window), so a
    value set at once is kept, and a bad value typed back to the last good one clears its error."""
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await switch_mode(pilot, "f3", "recipe")
        screen = app.screen
        screen.set_recipe(rc.updated(rc.Recipe(), {"method.rank": 32}))
        field = screen.query_one("#f-method-rank", Input)
        field.value = "8"  # at once: its change event queues behind the load's own
        await wait_until(pilot, lambda: screen.handled.get(field.id) == "8")
        assert screen.recipe.method.rank == 8 and not screen.bad
        await type_into(pilot, "#f-method-rank", "x")
        assert "method.rank" in screen.bad and screen.recipe.method.rank == 8
        await type_into(pilot, "#f-method-rank", "8")  # typed back to the last good value: no error left
        assert not screen.bad and not screen.query_one("#f-method-rank-error").display
