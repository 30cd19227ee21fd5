"""The advisor: GPU cards, budgets in, the eight methods out, details, and on to a recipe."""

from __future__ import annotations

from pathlib import Path

from peft_advisor.core.catalog import METHOD_IDS

import pytest
from textual.widgets import Input, Static
from tui_support import focused_id, make_app, on_top, recipe_ready, wait_until

from peft_advisor.tui.widgets.gpu_card import GpuCard
from peft_advisor.tui.widgets.tradeoff_table import TradeoffTable


def table_of(app) -> TradeoffTable:
    return app.screen.query_one(TradeoffTable)


def rows(app) -> dict:
    tables = app.screen.query(TradeoffTable)  # mounted just after the first paint
    return tables.first().rows_by_method if tables else {}


async def set_input(pilot, selector: str, text: str) -> None:
    """Focus the field, clear it and type `text` key by key, as a person would."""
    field = pilot.app.screen.query_one(selector, Input)
    field.focus()
    field.value = ""
    await pilot.press(*text)


async def settle(pilot, app, inputs_like) -> None:
    """Wait until the table shows advice for inputs matching `inputs_like(inputs)`, and has laid it
    out: a DataTable measures its new rows' column widths on its next idle, not in `add_row`, so a
    width read as soon as the rows are there can still be the header's (`_new_rows` is Textual's own
    queue of rows not yet measured; no public flag says it)."""
    await wait_until(pilot, lambda: app.screen.inputs is not None and inputs_like(app.screen.inputs) and rows(app))
    await wait_until(pilot, lambda: not table_of(app)._new_rows and not table_of(app)._require_update_dimensions)


async def test_gpu_cards_and_default_budget_from_free_memory(workdir):
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await wait_until(pilot, lambda: len(app.screen.query(GpuCard)) == 2)
        assert app.screen.query_one("#in-vram", Input).value == "22.0"  # the 4090's free memory
        await settle(pilot, app, lambda i: i.vram_bytes == 22 * 1024**3)
        assert len(rows(app)) == len(METHOD_IDS) and table_of(app).row_count == len(METHOD_IDS)
        await pilot.click(list(app.screen.query(GpuCard))[1])  # the H200: the budget follows its free memory
        await settle(pilot, app, lambda i: i.vram_bytes == 140 * 1024**3)
        assert app.screen.query_one("#in-vram", Input).value == "140.0"
        assert all(r.fits for r in rows(app).values())


async def test_typing_a_budget_changes_the_table(workdir):
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(pilot, app, lambda i: i.vram_bytes == 22 * 1024**3)
        before = {m: r.fits for m, r in rows(app).items()}
        assert before["lora"] and not before["full"]
        await set_input(pilot, "#in-vram", "12")
        await settle(pilot, app, lambda i: i.vram_bytes == 12 * 1024**3)
        after = rows(app)
        assert after["qlora"].fits and not after["lora"].fits  # an 8B model in 12 GiB: only 4-bit fits
        assert after["qlora"].rank == 1 and list(after)[0] == "qlora"  # the recommended row comes first
        cell = str(table_of(app).get_row("qlora")[0])
        assert cell == "★"


async def test_columns_narrow_again_after_a_wide_table(workdir):
    """A DataTable's columns only widen; the advisor's must fit the advice on screen, whatever came before."""
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(pilot, app, lambda i: i.vram_bytes == 22 * 1024**3)
        on_card = lambda: table_of(app).ordered_columns[3].get_render_width(table_of(app))  # noqa: E731
        narrow = on_card()
        await set_input(pilot, "#in-vram", "1")  # every method at thousands of percent: a wider column
        await settle(pilot, app, lambda i: i.vram_bytes == 1 * 1024**3)
        assert on_card() > narrow
        await set_input(pilot, "#in-vram", "22")
        await settle(pilot, app, lambda i: i.vram_bytes == 22 * 1024**3)
        assert on_card() == narrow


async def test_a_ruled_out_method_shows_its_reason(workdir):
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(pilot, app, lambda i: True)  # the first advice, as a person sees it before typing
        await set_input(pilot, "#in-vram", "12")
        await settle(pilot, app, lambda i: i.vram_bytes == 12 * 1024**3)
        full = rows(app)["full"]
        assert not full.fits and full.why.startswith("needs")
        table = table_of(app)
        assert str(table.get_row("full")[-1]) == full.why  # in the table's Why column
        table.focus()
        table.move_cursor(row=table.get_row_index("full"))
        # the highlight reaches the screen as messages (the table's, then its own MethodHighlighted),
        # and the cursor was on another ruled-out row before: wait for this row's reason
        shown = lambda: str(app.screen.query_one("#detail-text", Static).content)  # noqa: E731
        await wait_until(pilot, lambda: full.why.split(";")[0] in shown())
        detail = shown()
        assert "Ruled out:" in detail and full.why.split(";")[0] in detail
        assert "Sources:" in detail and full.method_info.sources[0] in detail


async def test_no_gpu_shows_a_notice_and_takes_a_typed_budget(workdir):
    app = make_app(gpu=False)
    async with app.run_test(size=(100, 32)) as pilot:
        notice = app.screen.query_one("#gpu-notice", Static)
        await wait_until(pilot, lambda: notice.display)
        assert "no NVIDIA GPU" in str(notice.content) and not app.screen.query(GpuCard)
        assert "give --vram" not in str(notice.content)  # the CLI's hint is the CLI's
        await set_input(pilot, "#in-vram", "24")
        await settle(pilot, app, lambda i: i.vram_bytes == 24 * 1024**3)
        assert rows(app)["lora"].fits


async def test_no_gpu_first_screen_shows_every_need_and_focus_waits_in_the_budget(workdir):
    """Before a budget is typed each method says what it needs; typing 12 as the notice asks
    goes into the budget, not over the model."""
    app = make_app(gpu=False)
    async with app.run_test(size=(100, 32)) as pilot:
        await wait_until(pilot, lambda: len(rows(app)) == len(METHOD_IDS))
        needs = rows(app)
        assert all(r.fit == "?" and r.why.startswith("needs ") and r.need_bytes for r in needs.values())
        assert needs["qlora"].need_bytes < needs["lora"].need_bytes < needs["full"].need_bytes
        assert str(table_of(app).get_row("qlora")[2]) == "?"
        assert app.screen.focused is app.screen.query_one("#in-vram", Input)
        await pilot.press("1", "2")
        await settle(pilot, app, lambda i: i.vram_bytes == 12 * 1024**3)
        assert app.screen.query_one("#in-model", Input).value == "llama-3.1-8b"
        assert rows(app)["qlora"].rank == 1


async def test_the_app_gives_the_clis_advice(workdir):
    """Same defaults, same call: the app's first row is the CLI's recommendation, with its fit."""
    from peft_advisor.core.advise import AdviceRequest, advise

    app = make_app(gpu=False)
    async with app.run_test(size=(100, 32)) as pilot:
        await set_input(pilot, "#in-vram", "12")
        await settle(pilot, app, lambda i: i.vram_bytes == 12 * 1024**3)
        from peft_advisor.probe import free_ram_bytes

        cli = advise(AdviceRequest(vram_gib=12), ram=free_ram_bytes)
        first = next(r for r in rows(app).values() if r.rank == 1)
        # QLoRA only just fits 12 GiB without the techniques ("tight"); with them it fits with room
        assert (first.method, first.fit) == (cli.best.method, cli.best.fit) == ("qlora", "ok")
        assert first.estimate.total_bytes == cli.best.estimate.total_bytes
        assert first.settings == cli.best.settings and first.settings.fused_loss
        assert str(table_of(app).get_row("qlora")[2]) == "ok" and first.why == cli.best.reasons[0]


async def test_bad_input_says_why_and_keeps_the_last_table(workdir):
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(pilot, app, lambda i: i.model == "llama-3.1-8b")
        await set_input(pilot, "#in-model", "llama-9")
        error = app.screen.query_one("#input-error", Static)
        await wait_until(pilot, lambda: error.display and "unknown model" in str(error.content))
        assert len(rows(app)) == len(METHOD_IDS)  # the previous advice stays until the input is good again


@pytest.mark.parametrize("field, text, words", [  # the advice core's one validation, in this screen's labels
    ("#in-vram", "nan", "VRAM GiB must be a positive number"), ("#in-vram", "1e400", "VRAM GiB inf is absurd"),
    ("#in-vram", "99999999999", "VRAM GiB 1e+11 is absurd"), ("#in-adapter", "inf", "adapter MB inf is absurd"),
    ("#in-adapter", "nan", "adapter MB must be a positive number"), ("#in-batch", "99999999", "batch 99999999 is absurd"),
])
async def test_numbers_that_are_not_budgets_say_so(field, text, words, workdir):
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(pilot, app, lambda i: i.model == "llama-3.1-8b")
        await set_input(pilot, field, text)
        error = app.screen.query_one("#input-error", Static)
        await wait_until(pilot, lambda: error.display and words in str(error.content))
        assert app.is_running and len(rows(app)) == len(METHOD_IDS)


async def test_enter_on_a_row_opens_its_recipe(workdir):
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await set_input(pilot, "#in-model", "qwen2.5-0.5b")
        await settle(pilot, app, lambda i: i.model == "qwen2.5-0.5b")
        table = table_of(app)
        table.focus()
        table.move_cursor(row=table.get_row_index("dora"))
        await pilot.press("enter")
        # the advisor's recipe, loaded: the screen mounts with the default one, which has no budget
        await wait_until(pilot, lambda: recipe_ready(app) and app.screen.recipe.budget.vram_gib > 0)
        recipe = app.screen.recipe
        assert recipe.method.name == "dora" and recipe.model.id == "qwen2.5-0.5b"
        assert recipe.estimate.peak_bytes == rows_peak(app)


def rows_peak(app) -> int:
    advisor = app.get_screen_stack("advisor")[0]
    return advisor.query_one(TradeoffTable).rows_by_method["dora"].estimate.peak_bytes


async def test_model_picker_searches_presets(workdir):
    from peft_advisor.tui.screens.model_picker import ModelPickerScreen

    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        model = app.screen.query_one("#in-model", Input)
        before = model.value
        await pilot.press("ctrl+f")
        # mounted, and its search field focused: keys typed before that go to the advisor's fields
        await wait_until(pilot, lambda: on_top(app, ModelPickerScreen) and focused_id(app) == "model-search")
        await pilot.press(*"qwen3 0.6")
        await pilot.press("enter")
        # the choice reaches the advisor in a callback after the picker is dismissed
        await wait_until(pilot, lambda: not isinstance(app.screen, ModelPickerScreen) and model.value != before)
        assert app.screen.query_one("#in-model", Input).value == "qwen3-0.6b"


async def test_priority_reorders_the_methods(workdir):
    app = make_app()
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(pilot, app, lambda i: i.priority == "quality")
        app.screen.query_one("#in-priority").focus()
        await pilot.press("right", "right")  # quality → speed → memory
        await settle(pilot, app, lambda i: i.priority == "memory")
        order = list(rows(app))
        fitting = [r for r in rows(app).values() if r.fits]
        assert order[0] == min(fitting, key=lambda r: r.peak_bytes).method  # least memory first


async def test_techniques_off_is_recommend_no_techniques(workdir):
    """The techniques choice: "off" gives recommend --no-techniques's advice (no fused loss, Liger,
    8-bit AdamW or offloading in any method's settings), "on" brings them back."""
    def uses_techniques(row) -> bool:
        s = row.settings
        return s is not None and (s.fused_loss or s.liger_kernels or s.offload_activations or s.optimizer != "adamw")

    app = make_app()
    async with app.run_test(size=(120, 32)) as pilot:
        await settle(pilot, app, lambda i: i.vram_bytes == 22 * 1024**3)
        await set_input(pilot, "#in-vram", "8")
        await settle(pilot, app, lambda i: i.vram_bytes == 8 * 1024**3)
        await wait_until(pilot, lambda: any(uses_techniques(r) for r in rows(app).values()))
        app.screen.query_one("#in-techniques").focus()
        await pilot.press("right")
        await wait_until(pilot, lambda: rows(app) and not any(uses_techniques(r) for r in rows(app).values()))
        off = {m: r.fits for m, r in rows(app).items()}
        await pilot.press("right")
        await wait_until(pilot, lambda: any(uses_techniques(r) for r in rows(app).values()))
        assert sum(r.fits for r in rows(app).values()) >= sum(off.values())  # they only ever help


async def test_ctrl_b_shows_the_study_front_and_t_switches_task(workdir):
    """The front the CLI prints (`matrix --front`): the same table and the same plotext drawing."""
    from peft_advisor.core.study import runs_of
    from peft_advisor.core.study_view import render_front
    from peft_advisor.tui.screens.front import FrontScreen

    app = make_app()
    async with app.run_test(size=(100, 36)) as pilot:
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: isinstance(app.screen, FrontScreen) and app.screen.plotted)
        screen = app.screen
        assert str(screen.query_one("#front-table", Static).content) == render_front(runs_of("MetaMathQA"))
        assert "MetaMathQA: score against peak memory" in screen.plotted and "●" in screen.plotted
        assert len(screen.plotted.splitlines()[0]) <= screen.query_one("#front-plot").size.width
        await pilot.press("t")
        await wait_until(pilot, lambda: "image-gen: score" in screen.plotted)
        assert str(screen.query_one("#front-table", Static).content) == render_front(runs_of("image-gen"))
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, FrontScreen))


@pytest.mark.parametrize("packing", [False, True])
async def test_the_app_with_data_estimates_as_recommend_data_does(workdir, tmp_path, packing):
    """`peft-advisor --data PATH [--packing]`: every method's estimate in the table is recommend
    --data's for the same request (same settings, same peak), at the data's longest row instead of
    the typed seq, or at the typed seq when short rows are packed into it."""
    import json
    import subprocess
    import sys

    rows_ = [{"instruction": "add %d and %d" % (n, n + 1), "input": "", "output": str(2 * n + 1)} for n in range(60)]
    path = tmp_path / "short.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows_))
    app = make_app(data=str(path), packing=packing)
    async with app.run_test(size=(100, 32)) as pilot:
        await set_input(pilot, "#in-model", "demo")
        await set_input(pilot, "#in-vram", "24")
        await settle(pilot, app, lambda i: i.model == "demo" and i.vram_bytes == 24 * 1024**3)
        note = str(app.screen.query_one("#data-note").content)
        assert app.screen.query_one("#data-note").display and str(path) in note
        shown = rows(app)
    cli = subprocess.run([sys.executable, "-m", "peft_advisor", "recommend", "--model", "demo", "--vram", "24",
                          "--data", str(path), "--json", *(["--packing"] if packing else [])],
                         capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])  # this checkout's peft_advisor
    assert cli.returncode == 0, cli.stderr
    doc = json.loads(cli.stdout)
    if packing:  # about 1,100 tokens of short rows packed into rows of the typed 1024
        assert doc["data"]["estimate_seq_len"] == 1024 and "packed" in note
    else:  # short rows: far below the typed 1024
        assert doc["data"]["estimate_seq_len"] < 64 and "packed" not in note
    for rec in doc["recommendations"]:
        row = shown[rec["method"]]
        assert row.settings.seq_len == rec["settings"]["seq_len"] == doc["data"]["estimate_seq_len"]
        assert row.estimate.peak_bytes == rec["peak_bytes"], rec["method"]
        assert any(r.startswith(f"data: {path}") for r in row.reasons)


async def test_the_app_reads_data_with_its_own_column_names(workdir, tmp_path):
    """`peft-advisor --data qa.jsonl --columns instruction=question,output=answer`: the advice reads
    the rows as recommend --columns does, and the recipe it makes keeps the mapping."""
    import json

    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"question": f"{n}+{n}?", "answer": str(2 * n)}) + "\n" for n in range(30)))
    app = make_app(data=str(path), data_choice={"data.columns": "instruction=question,output=answer"})
    async with app.run_test(size=(100, 32)) as pilot:
        await set_input(pilot, "#in-model", "demo")
        await set_input(pilot, "#in-vram", "24")
        await settle(pilot, app, lambda i: i.model == "demo" and i.vram_bytes == 24 * 1024**3)
        assert "columns instruction=question,output=answer" in str(app.screen.query_one("#data-note").content)
        best = next(r for r in rows(app).values() if r.rank == 1)
        assert any("rows (instruction)" in r for r in best.reasons)
        table_of(app).focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.current_mode == "recipe" and app.screen.recipe.budget.vram_gib > 0)
        assert app.screen.recipe.data.columns == "instruction=question,output=answer"
