"""The advisor: your GPU, your budgets, and every method side by side.

The GPU cards refresh once a second from a thread worker (NVML calls block). Every change to an
input schedules one recomputation in an exclusive thread worker, so typing never waits for the
estimator and a stale result can never overwrite a newer one. The screen builds an
`AdviceRequest` and renders what `core.advise` returns: the same call, defaults and checks as the
CLI's `recommend`. Before a budget is known (no GPU, nothing typed) it shows what each method
needs (`core.advise.needs`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from functools import lru_cache

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Static
from textual.worker import WorkerState, get_current_worker

from peft_advisor.core.advise import DATA_CHOICE, AdviceRequest, demo_fast
from peft_advisor.core.errors import UserError
from peft_advisor.core.units import MB, bytes_to_gib, fmt_bytes
from peft_advisor.tui.messages import GpusProbed, RecipeRequested
from peft_advisor.tui.widgets.choice import Choice
from peft_advisor.tui.widgets.gpu_card import GpuCard
from peft_advisor.tui.widgets.nav_bar import NavBar

# The table, the detail pane, the footer and the model presets arrive just after the first paint
# (see `_start_background_work`): the first frame shows the navigation and the inputs at once.

PRIORITIES = ("quality", "speed", "memory", "size")
TECHNIQUES_CHOICE = ("on", "off")
"""May the advice turn on the memory-saving techniques (fused loss, Liger, 8-bit AdamW, offloading):
"off" is the CLI's --no-techniques."""
DEFAULTS = AdviceRequest()
"""The advice core's defaults, the CLI's too."""
DEFAULT_MODEL = DEFAULTS.model
LABELS = {"vram_gib": "VRAM GiB", "adapter_mb": "adapter MB", "seq_len": "seq len", "batch_size": "batch"}
"""Fields named as this screen labels them, in the core's messages."""
NO_GPU_HINT = ": type the GPU's VRAM budget in GiB"
DEBOUNCE_S = 0.15


@dataclass(frozen=True)
class AdviceInputs:
    model: str
    vram_bytes: int
    adapter_budget_bytes: int | None
    seq_len: int
    batch_size: int
    priority: str
    source: str
    """Where the budget came from (the chosen GPU's free memory, or typed)."""
    total_vram_bytes: int | None
    """The card's size, which sizes the CUDA context estimate."""
    gpus: int = 1
    """GPUs the advice is for (the probed GPUs of the chosen model, as the CLI's default)."""


class AdvisorScreen(Screen):
    """Inputs on top, the trade-off table in the middle, the chosen method's details below."""

    CSS_PATH = "advisor.tcss"
    BINDINGS = [
        Binding("ctrl+f", "pick_model", "Find model"),
        Binding("ctrl+g", "focus_table", "Table"),
        Binding("ctrl+e", "make_recipe", "Recipe"),
        Binding("ctrl+b", "study_front", "Study front"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.probe_result = None
        self.chosen_gpu: int | None = None
        self.budget_typed = False
        """True once the person typed a budget: the probe stops filling it in."""
        self.rows: list = []
        """`tradeoff_table.MethodRow`s of the last advice."""
        self.inputs: AdviceInputs | None = None
        self._timer = None

    def compose(self) -> ComposeResult:
        yield NavBar("advisor")
        yield Horizontal(id="gpus")
        yield Static("", id="gpu-notice", classes="notice", markup=False)
        with Horizontal(classes="input-row"):
            yield Label("model", classes="in-label")
            yield Input(DEFAULT_MODEL, id="in-model", compact=True)
            yield Label("VRAM GiB", classes="in-label")
            yield Input("", id="in-vram", compact=True, placeholder="budget", classes="num")
            yield Label("adapter MB", classes="in-label")
            yield Input("", id="in-adapter", compact=True, placeholder="no limit", classes="num")
        with Horizontal(classes="input-row"):
            yield Label("priority", classes="in-label")
            yield Choice(PRIORITIES, "quality", id="in-priority")
            yield Label("seq len", classes="in-label")
            yield Input(str(DEFAULTS.seq_len), id="in-seq", compact=True, classes="num")
            yield Label("batch", classes="in-label")
            yield Input(str(DEFAULTS.batch_size), id="in-batch", compact=True, classes="num")
            yield Label("techniques", classes="in-label")
            yield Choice(TECHNIQUES_CHOICE, "on" if DEFAULTS.techniques else "off", id="in-techniques")
        yield Static("", id="input-error", classes="error", markup=False)
        packed = " packed" if self.packing else ""
        chosen = "".join(f" · {key.split('.')[1]} {value}" for key, value in self.data_choice.items())
        yield Static(f"data: {self.data}{packed}{chosen} · estimates at its longest batch, as recommend --data"
                     f"{packed and ' --packing'}" if self.data else "",
                     id="data-note", classes="notice", markup=False)

    @property
    def data(self) -> str | None:
        """The training data the app was opened with (`peft-advisor --data PATH`), or None."""
        return getattr(self.app, "advice_data", None)

    @property
    def data_choice(self) -> dict:
        """Which rows of the data ({"data.columns": …} as the recipe's keys), from the app's flags."""
        return dict(getattr(self.app, "advice_data_choice", {}) or {})

    @property
    def packing(self) -> bool:
        """The data's rows packed into seq-len-token rows (`peft-advisor --data PATH --packing`)."""
        return bool(getattr(self.app, "advice_packing", False))

    def on_mount(self) -> None:
        self.query_one("#gpu-notice").display = False
        self.query_one("#data-note").display = bool(self.data)
        self.query_one("#in-model", Input).focus()
        # Probe, advise and build the rest once the first frame is out (a short timer lets the
        # frame reach the terminal first; `call_after_refresh` would run before it is written).
        self.set_timer(0.05, self._start_background_work)

    def _start_background_work(self) -> None:
        from textual.suggester import SuggestFromList

        from peft_advisor.tui.screens.model_picker import model_ids
        from peft_advisor.tui.widgets.budget_bar import BudgetBar
        from peft_advisor.tui.widgets.tradeoff_table import TradeoffTable

        self.query_one("#in-model", Input).suggester = SuggestFromList(model_ids())
        detail = VerticalScroll(Static("", id="detail-head"), BudgetBar(id="breakdown"), Static("", id="detail-text"),
                                id="detail")
        self.mount(TradeoffTable(id="table"), detail, Footer())  # the footer's keys cost ~0.1 s to build
        self.set_interval(1.0, self._probe_gpus)
        self._probe_gpus()
        self._schedule()

    # ------------------------------------------------------------------ GPUs

    @work(thread=True, exclusive=True, group="probe", exit_on_error=False, description="NVML snapshot")
    def _probe_gpus(self) -> None:
        self.post_message(GpusProbed(self.app.services.prober.snapshot()))

    def on_gpus_probed(self, message: GpusProbed) -> None:
        message.stop()
        if message.result == self.probe_result:
            return  # nothing changed since the last second: no repaint
        result = self.probe_result = message.result
        box, notice = self.query_one("#gpus", Horizontal), self.query_one("#gpu-notice", Static)
        cards = list(box.query(GpuCard))
        if [c.gpu.index for c in cards] != [g.index for g in result.gpus]:
            box.remove_children()
            box.mount_all(GpuCard(g) for g in result.gpus)
        else:
            for card, gpu in zip(cards, result.gpus):
                card.gpu = gpu
        box.display = bool(result.gpus)
        notice.display = not result.gpus
        if not result.gpus:
            notice.update(f"{result.message}{NO_GPU_HINT}")
            model = self.query_one("#in-model", Input)
            if model.has_focus and model.value == DEFAULT_MODEL:  # the notice asks for a budget: start there
                self.query_one("#in-vram", Input).focus()
            self._schedule()
            return
        if self.chosen_gpu is None or result.gpu(self.chosen_gpu) is None:
            self._choose_gpu(result.gpus[0].index)
        else:
            self._mark_chosen()

    def on_gpu_card_chosen(self, message: GpuCard.Chosen) -> None:
        self.budget_typed = False
        self._choose_gpu(message.index)

    def _choose_gpu(self, index: int) -> None:
        self.chosen_gpu = index
        self._mark_chosen()
        from peft_advisor.core.hardware import usable_vram_bytes

        gpu = self.probe_result.gpu(index) if self.probe_result else None
        free = usable_vram_bytes(gpu) if gpu is not None else None  # free memory, as the CLI's default
        if free is not None and not self.budget_typed:
            field = self.query_one("#in-vram", Input)
            text = f"{bytes_to_gib(free):.1f}"
            if field.value != text:
                with field.prevent(Input.Changed):
                    field.value = text
                self._schedule()

    def _mark_chosen(self) -> None:
        for card in self.query(GpuCard):
            card.chosen = card.gpu is not None and card.gpu.index == self.chosen_gpu

    # ------------------------------------------------------------------ inputs → advice

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "in-vram":
            self.budget_typed = True
        if event.input.id and event.input.id.startswith("in-"):
            self._schedule()

    def on_choice_changed(self, event: Choice.Changed) -> None:
        self._schedule()

    def _schedule(self) -> None:
        """Recompute shortly after the last keystroke (one worker per pause in typing)."""
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_S, self._recompute)

    def _read_inputs(self) -> AdviceRequest | str:
        """The typed text as the core's request (the core checks the values), or why the text is
        not numbers, as one line. With no budget and no GPU the request still goes: the table then
        shows what each method needs."""
        def value(id_: str) -> str:
            return self.query_one(id_, Input).value.strip()

        model = value("#in-model")
        if not model:
            return "model: type a preset id (Ctrl+F to search) or a local model folder"
        try:
            vram = float(value("#in-vram")) if value("#in-vram") else None
            adapter = float(value("#in-adapter")) if value("#in-adapter") else None
            seq, batch = int(value("#in-seq")), int(value("#in-batch"))
        except ValueError as err:
            return f"not a number: {str(err).split(': ', 1)[-1]}"
        gpu = self._gpu()
        if gpu is not None and not self.budget_typed:
            vram = None  # the chosen GPU's free memory, as the CLI's default (the core reads the probe)
        elif vram is None and self.probe_result is None:
            return "VRAM GiB: type a budget"
        return AdviceRequest(model=model, vram_gib=vram, adapter_mb=adapter, seq_len=seq, batch_size=batch,
                             priority=str(self.query_one("#in-priority", Choice).value),
                             gpu_index=gpu.index if gpu is not None else 0, data=self.data, packing=self.packing,
                             techniques=self.query_one("#in-techniques", Choice).value == "on",
                             **{DATA_CHOICE[key]: value for key, value in self.data_choice.items()})

    def _gpu(self):
        if self.probe_result is None or self.chosen_gpu is None:
            return None
        return self.probe_result.gpu(self.chosen_gpu)

    def _recompute(self) -> None:
        inputs = self._read_inputs()
        error = self.query_one("#input-error", Static)
        if not isinstance(inputs, str):
            try:
                from peft_advisor.core.advise import check

                check(inputs, LABELS)
            except UserError as err:
                inputs = str(err)
        if isinstance(inputs, str):
            error.update(inputs)
            error.display = bool(inputs)
            return
        self._advise(inputs)

    @work(thread=True, exclusive=True, group="advice", exit_on_error=False, description="recommend")
    def _advise(self, req: AdviceRequest) -> tuple[AdviceInputs, list] | None:
        """The same call as `peft-advisor recommend`, off the UI thread; with no budget at all,
        what each method needs."""
        from peft_advisor.calibration_store import calibrator
        from peft_advisor.core.advise import advise, needs
        from peft_advisor.core.catalog import load_catalog
        from peft_advisor.tui.widgets.tradeoff_table import rows_from_advice, rows_from_needs

        probe_result = self.probe_result
        if req.vram_gib is None and (probe_result is None or not probe_result.gpus):
            rows = rows_from_needs(needs(req, data_profile_cached), load_catalog())
            inputs = AdviceInputs(req.model, 0, None, req.seq_len, req.batch_size, req.priority, "", None)
        else:
            from peft_advisor.probe import free_ram_bytes

            advice = advise(req, lambda: probe_result, calibrator, LABELS, data_profile_cached, ram=free_ram_bytes)
            b = advice.budget
            inputs = AdviceInputs(req.model, b.vram_bytes, b.adapter_bytes, req.seq_len, req.batch_size, req.priority,
                                  b.source, b.total_vram_bytes, advice.parallel.gpus)
            rows = rows_from_advice(advice, load_catalog())
        if get_current_worker().is_cancelled:
            return None
        return inputs, rows

    def on_worker_state_changed(self, event) -> None:
        worker = event.worker
        if worker.group != "advice":
            return
        error = self.query_one("#input-error", Static)
        if worker.state == WorkerState.ERROR:
            err = worker.error
            error.update(str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}")
            error.display = True
        elif worker.state == WorkerState.SUCCESS and worker.result is not None:
            error.display = False
            self.inputs, self.rows = worker.result
            self.query_one("#table").show_rows(self.rows)

    # ------------------------------------------------------------------ details and recipe

    def on_tradeoff_table_method_highlighted(self, message) -> None:
        self._show_detail(message.row)

    def _show_detail(self, row) -> None:
        info, est, s = row.method_info, row.estimate, row.settings
        verdict = ("[b yellow]★ recommended[/]" if row.rank == 1 else f"#{row.rank}" if row.rank
                   else "[dim]no budget yet[/]" if row.fit == "?" else "[b red]✗ ruled out[/]")
        head = [f"[b]{row.name}[/b] {verdict} · {_esc(getattr(info, 'summary', ''))}"]
        if s is not None:
            from peft_advisor.core.recommend import settings_words

            words = settings_words(s, self.inputs.batch_size if self.inputs else None)
            head.append("[dim]settings:[/] " + _esc(" · ".join(words + [f"seq {s.seq_len}"])))
        self.query_one("#detail-head", Static).update("\n".join(head))
        parts = dict(getattr(est, "breakdown", {}) or {})
        if est is not None:
            parts["CUDA context"] = est.context_bytes
        budget = (self.inputs.vram_bytes or None) if self.inputs else None
        band = (f" (range {fmt_bytes(est.low_bytes + est.context_bytes)}–{fmt_bytes(est.high_bytes + est.context_bytes)})"
                if est is not None else "")
        caption = (f"on card {fmt_bytes(row.peak_bytes)}{band} vs budget {fmt_bytes(budget)}" if budget
                   else f"needs a {fmt_bytes(row.need_bytes)} card{band}")
        self.query_one("#breakdown").show(list(parts.items()), budget, caption)
        title = "Why" if row.fits else "Needs" if row.fit == "?" else "Ruled out"
        lines = [f"[b]{title}:[/b] " + "; ".join(_esc(r.rstrip(".")) for r in row.reasons)]
        if info is not None:
            lines += [f"[b]Quality:[/b] {_esc(info.quality_evidence)}", f"[b]Cost:[/b] {_esc(info.cost_evidence)}"]
            lines += [f"[b]Caveat:[/b] {_esc(c)}" for c in info.caveats]
            lines += ["[b]Sources:[/b]"] + [f"  {_esc(src)}" for src in info.sources]
        self.query_one("#detail-text", Static).update("\n".join(lines))

    def on_tradeoff_table_method_chosen(self, message) -> None:
        self._make_recipe(message.row)

    def action_make_recipe(self) -> None:
        table = self.query_one("#table")
        row = table.rows_by_method.get(table.current_method() or "")
        if row is not None:
            self._make_recipe(row)

    def _make_recipe(self, row) -> None:
        from peft_advisor.core.recipe import recipe_from_recommendation

        if self.inputs is None or row.settings is None or not self.inputs.vram_bytes:
            if row.fit == "?":
                self.notify("type a VRAM budget first: the recipe is made for a card", severity="warning")
            return
        settings = row.settings
        if self.data:  # as recommend --data --export: max_seq_len is the typed seq, not the data's longest row
            settings = replace(settings, seq_len=self.inputs.seq_len)
        try:
            recipe = recipe_from_recommendation(
                self.inputs.model, settings, row.estimate, data_path=self.data or "demo",
                vram_gib=round(bytes_to_gib(self.inputs.vram_bytes), 2),
                adapter_mb=(self.inputs.adapter_budget_bytes or 0) / MB,
                priority=self.inputs.priority, gpu=self.inputs.source, gpus=self.inputs.gpus,
                strategy=DEFAULTS.strategy,
            )
            recipe = demo_fast(recipe)
            from peft_advisor.core.recipe import updated

            recipe = updated(recipe, {**({"data.packing": True} if self.packing else {}), **self.data_choice})
        except UserError as err:
            self.notify(str(err), severity="error")
            return
        if row.fit != "ok":
            self.notify(f"{row.name} {'is tight' if row.fit == 'tight' else 'does not fit'}: {row.why}",
                        severity="warning")
        self.post_message(RecipeRequested(recipe))

    def action_pick_model(self) -> None:
        from peft_advisor.tui.screens.model_picker import ModelPickerScreen

        def chosen(model_id: str | None) -> None:
            if model_id:
                self.query_one("#in-model", Input).value = model_id

        self.app.push_screen(ModelPickerScreen(current=self.query_one("#in-model", Input).value), chosen)

    def action_focus_table(self) -> None:
        self.query_one("#table").focus()

    def action_study_front(self) -> None:
        """The study's Pareto front (what `peft-advisor matrix --front` prints), over this screen."""
        from peft_advisor.tui.screens.front import FrontScreen

        self.app.push_screen(FrontScreen())


_PROFILE_LOCK = threading.Lock()


def data_profile_cached(data: str, model: str, **choice: str):
    """`data_scan.profile`, once per (data, model, which rows: columns, config, split): the advice
    is recomputed on every keystroke, and counting a large dataset's tokens takes seconds. One at a
    time: a worker cancelled by the next keystroke runs on, and two threads importing transformers
    at once can see it half made."""
    with _PROFILE_LOCK:
        return _profile(data, model, tuple(sorted(choice.items())))


@lru_cache(maxsize=8)
def _profile(data: str, model: str, choice: tuple):
    from peft_advisor.data_scan import profile

    return profile(data, model, **dict(choice))


def _esc(text: str) -> str:
    return str(text).replace("[", r"\[")
