"""The advisor: your GPU, your budgets, and all eight methods side by side.

The GPU cards refresh once a second from a thread worker (NVML calls block). Every change to an
input schedules one recomputation in an exclusive thread worker, so typing never waits for the
estimator and a stale result can never overwrite a newer one. All numbers and reasons come from
`core.recommend` and `core.estimate`, the same calls the CLI's `recommend` makes.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Static
from textual.worker import WorkerState, get_current_worker

from peft_advisor.core.errors import UserError
from peft_advisor.core.limits import MAX_ADAPTER_MB, MAX_BATCH, MAX_SEQ_LEN, MAX_VRAM_GIB
from peft_advisor.core.units import GIB, MB, bytes_to_gib, fmt_bytes
from peft_advisor.tui.messages import GpusProbed, RecipeRequested
from peft_advisor.tui.widgets.choice import Choice
from peft_advisor.tui.widgets.gpu_card import GpuCard
from peft_advisor.tui.widgets.nav_bar import NavBar

# The table, the detail pane, the footer and the model presets arrive just after the first paint
# (see `_start_background_work`): the first frame shows the navigation and the inputs at once.

PRIORITIES = ("quality", "speed", "memory", "size")
DEFAULT_MODEL = "llama-3.1-8b"
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
    gpu_name: str | None = None
    """The probed GPU the budget came from: local calibration runs on it adjust the estimates."""


class AdvisorScreen(Screen):
    """Inputs on top, the trade-off table in the middle, the chosen method's details below."""

    CSS_PATH = "advisor.tcss"
    BINDINGS = [
        Binding("ctrl+f", "pick_model", "Find model"),
        Binding("ctrl+g", "focus_table", "Table"),
        Binding("ctrl+e", "make_recipe", "Recipe"),
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
            yield Input("1024", id="in-seq", compact=True, classes="num")
            yield Label("batch", classes="in-label")
            yield Input("1", id="in-batch", compact=True, classes="num")
        yield Static("", id="input-error", classes="error", markup=False)

    def on_mount(self) -> None:
        self.query_one("#gpu-notice").display = False
        self.query_one("#in-model", Input).focus()
        # Probe, advise and build the rest once the first frame is out (a short timer lets the
        # frame reach the terminal first; `call_after_refresh` would run before it is written).
        self.set_timer(0.05, self._start_background_work)

    def _start_background_work(self) -> None:
        from textual.suggester import SuggestFromList

        from peft_advisor.core.model_spec import preset_ids
        from peft_advisor.tui.widgets.budget_bar import BudgetBar
        from peft_advisor.tui.widgets.tradeoff_table import TradeoffTable

        self.query_one("#in-model", Input).suggester = SuggestFromList(preset_ids() + ["demo"])
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
            notice.update(f"{result.message.removesuffix(': give --vram')}: type the GPU's VRAM budget in GiB")
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

    def _read_inputs(self) -> AdviceInputs | str:
        """The inputs, or the first problem with them as one line."""
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
        if vram is None:  # with no GPU the notice above already asks for it
            return "" if self.probe_result is not None and not self.probe_result.gpus else "VRAM GiB: type a budget"
        if not (vram > 0) or seq < 1 or batch < 1 or (adapter is not None and not adapter >= 0):
            return "budgets, sequence length and batch must be positive"
        if vram > MAX_VRAM_GIB or (adapter is not None and adapter > MAX_ADAPTER_MB):  # also inf
            return f"VRAM GiB at most {MAX_VRAM_GIB:g}, adapter MB at most {MAX_ADAPTER_MB:g}"
        if seq > MAX_SEQ_LEN or batch > MAX_BATCH:
            return f"seq len at most {MAX_SEQ_LEN:,}, batch at most {MAX_BATCH:,}"
        priority = self.query_one("#in-priority", Choice).value
        gpu = self._gpu()
        if gpu is not None and not self.budget_typed:
            source, total, name = f"GPU {gpu.index} {gpu.name}: free memory", gpu.total_bytes, gpu.name
        else:  # a typed figure is taken as the card's size, as the CLI's --vram is
            source, total, name = f"typed {vram:g} GiB", int(vram * GIB), None
        return AdviceInputs(model, int(vram * GIB), int(adapter * MB) if adapter else None, seq, batch,
                            str(priority), source, total, name)

    def _gpu(self):
        if self.probe_result is None or self.chosen_gpu is None:
            return None
        return self.probe_result.gpu(self.chosen_gpu)

    def _recompute(self) -> None:
        inputs = self._read_inputs()
        error = self.query_one("#input-error", Static)
        if isinstance(inputs, str):
            error.update(inputs)
            error.display = bool(inputs)
            return
        self._advise(inputs)

    @work(thread=True, exclusive=True, group="advice", exit_on_error=False, description="recommend")
    def _advise(self, inputs: AdviceInputs) -> tuple[AdviceInputs, list] | None:
        """The same call as `peft-advisor recommend`, off the UI thread."""
        from peft_advisor.core.catalog import load_catalog
        from peft_advisor.tui.widgets.tradeoff_table import rows_from_advice
        from peft_advisor.core.model_spec import load_model_spec
        from peft_advisor.core.recommend import Budget, recommend

        spec = load_model_spec(inputs.model)
        budget = Budget(inputs.vram_bytes, inputs.adapter_budget_bytes, inputs.source, inputs.total_vram_bytes)
        extra = {}
        if inputs.gpu_name:  # as the CLI does for a probed GPU: local measurements adjust estimates
            from peft_advisor.calibration_store import calibrator

            extra["calibrate"] = calibrator(inputs.gpu_name, spec.id)
        advice = recommend(spec, budget, seq_len=inputs.seq_len, batch_size=inputs.batch_size,
                           priority=inputs.priority, **extra)
        if get_current_worker().is_cancelled:
            return None
        return inputs, rows_from_advice(advice, load_catalog())

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
        verdict = "[b yellow]★ recommended[/]" if row.rank == 1 else (f"#{row.rank}" if row.rank else "[b red]✗ ruled out[/]")
        head = [f"[b]{row.name}[/b] {verdict} · {_esc(getattr(info, 'summary', ''))}"]
        if s is not None:
            head.append("[dim]settings:[/] " + _settings_text(s))
        self.query_one("#detail-head", Static).update("\n".join(head))
        parts = dict(getattr(est, "breakdown", {}) or {})
        if est is not None:
            parts["CUDA context"] = est.context_bytes
        budget = self.inputs.vram_bytes if self.inputs else None
        band = (f" (range {fmt_bytes(est.low_bytes + est.context_bytes)}–{fmt_bytes(est.high_bytes + est.context_bytes)})"
                if est is not None else "")
        caption = f"on card {fmt_bytes(row.peak_bytes)}{band} vs budget {fmt_bytes(budget)}"
        self.query_one("#breakdown").show(list(parts.items()), budget, caption)
        lines = [f"[b]{'Why' if row.fits else 'Ruled out'}:[/b] " + "; ".join(_esc(r.rstrip(".")) for r in row.reasons)]
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

        if self.inputs is None or row.settings is None:
            return
        try:
            recipe = recipe_from_recommendation(
                self.inputs.model, row.settings, row.estimate,
                vram_gib=round(bytes_to_gib(self.inputs.vram_bytes), 2),
                adapter_mb=(self.inputs.adapter_budget_bytes or 0) / MB,
                priority=self.inputs.priority, gpu=self.inputs.source,
            )
        except UserError as err:
            self.notify(str(err), severity="error")
            return
        if not row.fits:
            self.notify(f"{row.name} does not fit: {row.why}", severity="warning")
        self.post_message(RecipeRequested(recipe))

    def action_pick_model(self) -> None:
        from peft_advisor.core.model_spec import preset_ids
        from peft_advisor.tui.screens.model_picker import ModelPickerScreen

        def chosen(model_id: str | None) -> None:
            if model_id:
                self.query_one("#in-model", Input).value = model_id

        self.app.push_screen(ModelPickerScreen(preset_ids(), self.query_one("#in-model", Input).value), chosen)

    def action_focus_table(self) -> None:
        self.query_one("#table").focus()


def _settings_text(s) -> str:
    targets = s.targets if isinstance(s.targets, str) else ",".join(s.targets)
    parts = []
    if s.method in ("lora", "rslora", "dora", "loraplus", "qlora"):
        parts.append(f"rank {s.rank} · {targets}")
    elif s.method == "vera":
        parts.append(f"vera rank {s.vera_rank} · {targets}")
    elif s.method == "galore":
        parts.append(f"galore rank {s.galore_rank}" + (" layer-wise" if s.galore_layerwise else ""))
    parts.append(f"batch {s.batch_size}×{s.grad_accum}" + (" · grad ckpt" if s.grad_ckpt else ""))
    parts.append(f"seq {s.seq_len}")
    return " · ".join(parts)


def _esc(text: str) -> str:
    return str(text).replace("[", r"\[")
