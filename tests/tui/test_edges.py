"""The app's rough edges (issue 14, item 6): dialogs over their context, `demo` in the model
picker, the Recipe screen's model, method and sequence length, the export's default place, and a
file picker for imports."""

from __future__ import annotations

import html
import re

from tui_support import focused_id, make_app, on_top, press_for_message, switch_mode, wait_until


def screen_text(app) -> str:
    """What the terminal shows, as plain text (non-breaking spaces as spaces)."""
    svg = app.export_screenshot()
    return " ".join(html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)).replace("\xa0", " ")


async def test_dialogs_leave_the_screen_behind_them_visible(workdir):
    from peft_advisor.tui.screens.confirm import ConfirmScreen
    from peft_advisor.tui.screens.model_picker import ModelPickerScreen

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await switch_mode(pilot, "f3", "recipe")
        app.push_screen(ConfirmScreen("Overwrite?"))
        # laid out, not only pushed: the screenshot shows what the compositor has placed
        await wait_until(pilot, lambda: on_top(app, ConfirmScreen) and app.screen.query_one("#question").region.area > 0)
        assert app.screen.styles.background.a < 1
        shown = screen_text(app)
        assert "Overwrite?" in shown and "learning rate" in shown
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, ConfirmScreen))  # before F2 leaves its mode
        await switch_mode(pilot, "f2", "advisor")
        await pilot.press("ctrl+f")
        await wait_until(pilot, lambda: on_top(app, ModelPickerScreen))
        assert app.screen.styles.background.a < 1


async def test_the_model_picker_lists_demo_first(workdir):
    from textual.widgets import Input, OptionList

    from peft_advisor.tui.screens.model_picker import ModelPickerScreen

    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        model = app.screen.query_one("#in-model", Input)
        before = model.value
        await pilot.press("ctrl+f")
        # mounted, and its search field focused (the keys typed next go there)
        await wait_until(pilot, lambda: on_top(app, ModelPickerScreen) and focused_id(app) == "model-search")
        options = app.screen.query_one(OptionList)
        assert options.get_option_at_index(0).id == "demo"
        assert "SmolLM2-135M" in str(options.get_option_at_index(0).prompt)
        await pilot.press(*"demo", "enter")
        # the choice reaches the advisor in a callback after the picker is dismissed
        await wait_until(pilot, lambda: not isinstance(app.screen, ModelPickerScreen) and model.value != before)
        assert app.screen.query_one("#in-model", Input).value == "demo"


async def test_export_goes_beside_the_run_folder_and_says_where(workdir):
    from pathlib import Path

    from test_recipe import message, type_into
    from textual.widgets import Input

    from peft_advisor.core import recipe as rc

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await switch_mode(pilot, "f3", "recipe")
        screen = app.screen
        assert screen.query_one("#file-path", Input).value == "runs/demo-lora.toml"
        await type_into(pilot, "#f-output-dir", "runs/mine")
        assert screen.query_one("#file-path", Input).value == "runs/mine.toml"  # follows while untyped
        await press_for_message(pilot, "ctrl+s")
        assert rc.load("runs/mine.toml").output.dir == "runs/mine"
        assert message(screen) == "wrote runs/mine.toml, beside its run folder runs/mine/"
        await type_into(pilot, "#file-path", "elsewhere.toml")
        await type_into(pilot, "#f-output-dir", "runs/other")
        assert screen.query_one("#file-path", Input).value == "elsewhere.toml"  # a typed name stays
        await press_for_message(pilot, "ctrl+s")
        assert message(screen) == f"wrote elsewhere.toml in {Path.cwd().resolve()}/"


async def test_the_recipe_screen_edits_model_method_and_seq_len_and_re_estimates(workdir):
    from test_recipe import type_into
    from textual.widgets import Input

    from peft_advisor.core.advise import with_estimate

    app = make_app()
    async with app.run_test(size=(100, 34)) as pilot:
        await switch_mode(pilot, "f3", "recipe")
        screen = app.screen
        field = lambda key: screen.query_one("#f-" + key.replace(".", "-"), Input)  # noqa: E731
        assert field("method.rank").display and not field("method.vera_rank").display
        await type_into(pilot, "#f-method-name", "vera")
        r = screen.recipe
        assert r.method.name == "vera" and r.output.dir == "runs/demo-vera"  # followed the default
        assert field("method.vera_rank").display and field("method.vera_rank").value == "256"
        assert not field("method.rank").display  # VeRA's size is vera_rank: no "rank 16" shown
        await type_into(pilot, "#f-method-vera_rank", "64")
        assert screen.recipe.method.vera_rank == 64
        await type_into(pilot, "#f-data-max_seq_len", "2048")
        await type_into(pilot, "#f-model-id", "qwen2.5-0.5b")
        r = screen.recipe
        assert (r.model.id, r.data.max_seq_len, r.output.dir) == ("qwen2.5-0.5b", 2048, "runs/qwen2.5-0.5b-vera")
        assert r == with_estimate(r)[0] and r.estimate.peak_bytes > 0  # the estimate of what is shown
        assert screen.query_one("#file-path", Input).value == "runs/qwen2.5-0.5b-vera.toml"
        await type_into(pilot, "#f-method-name", "lorax")
        await wait_until(pilot, lambda: "method.name" in str(screen.query_one("#f-method-name-error").content))
        assert screen.recipe.method.name == "vera"  # the last good value stays
        await type_into(pilot, "#f-model-id", "no-such-model-here")
        assert screen.recipe.estimate.peak_bytes == 0 and "no estimate" in screen.estimate_note


async def test_ctrl_f_on_the_recipe_screen_picks_the_model(workdir):
    from textual.widgets import Input

    from peft_advisor.tui.screens.model_picker import ModelPickerScreen

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await switch_mode(pilot, "f3", "recipe")
        screen = app.screen
        field = screen.query_one("#f-model-id", Input)
        before = field.value
        await pilot.press("ctrl+f")
        await wait_until(pilot, lambda: on_top(app, ModelPickerScreen) and focused_id(app) == "model-search")
        await pilot.press(*"qwen2.5 0.5", "enter")
        # the choice fills the field in a callback after the picker is dismissed, and the field's
        # change re-estimates the recipe (slow): wait until the screen has handled the new value
        await wait_until(pilot, lambda: app.screen is screen and field.value != before
                         and screen.handled.get(field.id) == field.value)
        assert app.screen.query_one("#f-model-id", Input).value == "qwen2.5-0.5b"
        assert app.screen.recipe.model.id == "qwen2.5-0.5b"


async def test_ctrl_o_offers_a_picker_of_toml_files(workdir):
    from pathlib import Path

    from test_recipe import message
    from textual.widgets import DirectoryTree

    from peft_advisor.core import recipe as rc
    from peft_advisor.tui.screens.file_picker import RecipePickerScreen

    Path("recipes").mkdir()
    rc.save(rc.updated(rc.Recipe(), {"method.rank": 4, "output.dir": "runs/picked"}), "recipes/picked.toml")
    Path("recipes/notes.txt").write_text("not a recipe")
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await switch_mode(pilot, "f3", "recipe")
        screen = app.screen
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, RecipePickerScreen))
        await pilot.press("escape")  # cancels: nothing changes
        await wait_until(pilot, lambda: app.screen is screen)
        assert app.current_mode == "recipe" and app.screen.recipe.method.rank == 16
        await pilot.press("ctrl+o")
        # mounted, its tree focused (Enter below goes to the tree)
        await wait_until(pilot, lambda: on_top(app, RecipePickerScreen) and isinstance(app.focused, DirectoryTree))
        tree = app.screen.query_one(DirectoryTree)

        def nodes():
            todo, out = list(tree.root.children), []
            while todo:
                node = todo.pop(0)
                out.append(node)
                todo.extend(node.children)
            return out

        def name(node) -> str:
            return str(Path(node.data.path).resolve().relative_to(Path.cwd().resolve()))

        def shown() -> list[str]:
            return [name(n) for n in nodes() if n.data]

        await wait_until(pilot, lambda: "recipes" in shown())
        assert "runs" in shown() and "bench-h200" in shown()  # folders stay, to walk into
        tree.move_cursor(next(n for n in nodes() if name(n) == "recipes"))
        await pilot.press("enter")  # opens the folder
        await wait_until(pilot, lambda: "recipes/picked.toml" in shown())
        assert "recipes/notes.txt" not in shown()  # only .toml files
        tree.move_cursor(next(n for n in nodes() if name(n) == "recipes/picked.toml"))
        before = message(screen)
        await pilot.press("enter")  # imports it
        # the choice reaches the Recipe screen in a callback after the picker is dismissed
        await wait_until(pilot, lambda: app.screen is screen and message(screen) != before)
        assert screen.recipe.method.rank == 4 and screen.recipe.output.dir == "runs/picked"
        assert message(screen) == "imported recipes/picked.toml"
