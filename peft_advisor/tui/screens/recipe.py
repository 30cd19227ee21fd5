"""The recipe: the fields a person changes most, checked as typed; export, import, launch.

Every check is `core.recipe`'s (`updated`, `problems`), so the messages are the CLI's messages.
A field that does not pass keeps its text and shows why under it; the recipe keeps its last good
value, so nothing typed is lost and nothing invalid is exported or launched. An import that
fails lists every problem of the file and changes nothing. Every accepted edit re-estimates the
recipe (`core.advise.with_estimate`), so what is exported carries the estimate of what is shown;
alpha follows the catalog's one rule while it still equals it, and the title says the rule.
Launching a recipe whose estimate is tight or over its budget asks first.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, ScrollableContainer
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, Static

from peft_advisor.core import recipe as rc
from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.sources import expand_home
from peft_advisor.core.units import fmt_bytes, fmt_count, fmt_file_bytes
from peft_advisor.tui.widgets.nav_bar import NavBar

# (recipe key, label, how typed text becomes a value)
FIELDS = (
    ("model.id", "model", "text"),
    ("method.name", "method", "text"),
    ("method.rank", "rank", "toml"),
    ("method.vera_rank", "vera rank", "toml"),
    ("method.galore_rank", "galore rank", "toml"),
    ("method.oft_block_size", "block size", "toml"),
    ("method.c3a_block_size", "block size", "toml"),
    ("data.max_seq_len", "seq len", "toml"),
    ("method.targets", "targets", "targets"),
    ("train.lr", "learning rate", "toml"),
    ("train.max_steps", "steps", "toml"),
    ("train.micro_batch", "batch", "toml"),
    ("data.path", "data", "text"),
    ("output.dir", "output dir", "text"),
)


ESTIMATE_KEYS = ("estimate.peak_bytes", "estimate.adapter_bytes", "estimate.trainable_params")
SIZE_FIELDS = ("method.rank", "method.vera_rank", "method.galore_rank", "method.oft_block_size", "method.c3a_block_size")
"""The size knobs; a method shows only the one it reads (`catalog.size_knob`): showing `rank 16` for
VeRA, whose adapter size is set by `vera_rank`, would make people tune a number that changes nothing."""


def size_key(method: str) -> str | None:
    """The recipe key of `method`'s rank (or block size); None for a method with neither."""
    from peft_advisor.core.catalog import size_knob

    try:
        knob = size_knob(method)
    except UserError:  # a method name being typed: the field refuses it, rank stays in view
        return "method.rank"
    return knob and f"method.{knob}"


def field_id(key: str) -> str:
    return "f-" + key.replace(".", "-")


def parse_typed(text: str, how: str):
    """Typed text to a recipe value, as the CLI's flags do: TOML syntax where a number is
    expected (a bare word stays a string, so the core names the problem), comma lists for targets."""
    text = text.strip()
    if how == "text":
        return text
    if how == "targets":
        return text if text in rc.TARGET_PRESETS else [t.strip() for t in text.split(",") if t.strip()]
    try:
        return rc.toml_loads(f"x = {text}")["x"]
    except ValueError:
        return text


def shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(value)
    if isinstance(value, float):
        return rc.fmt_float(value)
    return str(value)


def get_key(recipe: rc.Recipe, key: str):
    section, _, name = key.partition(".")
    return getattr(getattr(recipe, section), name)


class RecipeScreen(Screen):
    """Edit, export, import and launch one recipe."""

    CSS_PATH = "recipe.tcss"
    BINDINGS = [
        Binding("ctrl+s", "export", "Export"),
        Binding("ctrl+o", "import", "Import"),
        Binding("ctrl+r", "launch", "Launch"),
        Binding("ctrl+f", "pick_model", "Find model"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.recipe = rc.Recipe()
        """The last recipe whose every field passed."""
        self.bad: dict[str, str] = {}
        """Recipe key -> the problem with what is typed there now."""
        self._preview_timer = None
        self.estimate_note = ""
        """Why the recipe has no estimate (a model whose shapes are not known offline), or ""."""
        self.handled: dict[str, str] = {}
        """Input id -> the last value whose change this screen has handled (an edit re-estimates
        the recipe, which takes a while: what is typed is not yet what the recipe holds)."""

    def compose(self) -> ComposeResult:
        yield NavBar("recipe")
        yield Static("", id="recipe-title")
        with Grid(id="fields"):
            for key, label, _ in FIELDS:
                yield Label(label, id=field_id(key) + "-label", classes="field-label")
                yield Input(id=field_id(key), compact=True)
                yield Static("", id=field_id(key) + "-error", classes="field-error error", markup=False)
        with Horizontal(id="file-row"):
            yield Label("file", classes="field-label")
            yield Input(id="file-path", compact=True, placeholder="recipe.toml")
            yield Button("Export ^s", id="export", compact=True)
            yield Button("Import ^o", id="import", compact=True)
            yield Button("Launch ^r", id="launch", compact=True, variant="success")
        yield Static("", id="file-message", markup=False)
        with ScrollableContainer(id="preview-box"):
            yield Static("", id="preview", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#preview-box").border_title = "recipe.toml preview"
        self.set_recipe(self.recipe)

    # ------------------------------------------------------------------ state

    def set_recipe(self, recipe: rc.Recipe, file_path: str | None = None) -> None:
        """Show `recipe` in every field (from the advisor, or a successful import)."""
        self.recipe, self.bad, self.estimate_note = recipe, {}, ""
        for key, _, _ in FIELDS:  # their Input.Changed events come later, with what the recipe holds: no-ops
            self.query_one("#" + field_id(key), Input).value = shown(get_key(recipe, key))
            self._show_error(key, "")
        self.query_one("#file-path", Input).value = file_path or str(self._default_file())
        self._show_size_field()
        self._refresh_preview()

    def _default_file(self, recipe: rc.Recipe | None = None) -> Path:
        """Beside the run folder, where a launch saves it too (`runs/<name>.toml`)."""
        from peft_advisor.tui.launching import recipe_file

        return recipe_file((recipe or self.recipe).output.dir)

    def _follow_output_dir(self, before: rc.Recipe) -> None:
        """The file name follows output.dir while it is still the default one (not typed)."""
        field = self.query_one("#file-path", Input)
        if field.value == str(self._default_file(before)):
            field.value = str(self._default_file())

    def _after_edit(self, before: rc.Recipe) -> None:
        """Show what followed an accepted edit: the output dir (and the file name), the size field."""
        if self.recipe.output.dir != before.output.dir:
            field = self.query_one("#" + field_id("output.dir"), Input)
            if field.value != self.recipe.output.dir:
                with field.prevent(Input.Changed):
                    field.value = self.recipe.output.dir
            self._follow_output_dir(before)
        if self.recipe.method.name != before.method.name:
            self._show_size_field()

    def _show_size_field(self) -> None:
        """Only the size knob the current method reads is shown (VeRA: vera rank, not rank)."""
        wanted = size_key(self.recipe.method.name)
        for key in SIZE_FIELDS:
            show = key == wanted
            self.query_one("#" + field_id(key) + "-label").display = show
            self.query_one("#" + field_id(key)).display = show
            if not show and key in self.bad:  # a hidden field cannot hold the recipe back
                self.bad.pop(key)
                self.query_one("#" + field_id(key), Input).value = shown(get_key(self.recipe, key))
                self._show_error(key, "")

    def action_pick_model(self) -> None:
        from peft_advisor.tui.screens.model_picker import ModelPickerScreen

        field = self.query_one("#" + field_id("model.id"), Input)

        def chosen(model_id: str | None) -> None:
            if model_id:
                field.value = model_id

        self.app.push_screen(ModelPickerScreen(current=field.value), chosen)

    def on_input_changed(self, event: Input.Changed) -> None:
        try:
            self._edit(event)
        finally:  # the value this screen has acted on (re-estimated, or marked bad), per field
            self.handled[event.input.id] = event.value

    def _edit(self, event: Input.Changed) -> None:
        key = next((k for k, _, _ in FIELDS if field_id(k) == event.input.id), None)
        if key is None:
            return
        if event.value == shown(get_key(self.recipe, key)):  # what the recipe holds: set_recipe's own
            self.bad.pop(key, None)  # writes, or a bad value typed back to the last good one
            self._show_error(key, "")
            return
        how = next(h for k, _, h in FIELDS if k == key)
        changes = {key: parse_typed(event.value, how)}
        changes.update(_following(self.recipe, key, changes[key]))
        before = self.recipe
        try:
            from peft_advisor.core.advise import with_estimate

            self.recipe, self.estimate_note = with_estimate(rc.updated(self.recipe, changes))
            if self.estimate_note:  # 0 = not estimated: never export the last model's numbers
                self.recipe = rc.updated(self.recipe, dict.fromkeys(ESTIMATE_KEYS, 0))
        except UserError as err:
            self.bad[key] = str(err)
            self._show_error(key, str(err))
            return
        self._after_edit(before)
        self.bad.pop(key, None)
        self._show_error(key, "")
        if self._preview_timer is not None:  # redraw the long preview once typing pauses
            self._preview_timer.stop()
        self._preview_timer = self.set_timer(0.2, self._refresh_preview)

    def _show_error(self, key: str, message: str) -> None:
        self.query_one("#" + field_id(key) + "-error", Static).update(message)
        self.query_one("#" + field_id(key) + "-error").display = bool(message)
        self.query_one("#" + field_id(key), Input).set_class(bool(message), "-bad")

    def _refresh_preview(self) -> None:
        r = self.recipe
        est = r.estimate
        facts = [f"[b]{r.method.name}[/b] on [b]{r.model.id}[/b]"]
        if est.peak_bytes:
            facts.append(f"est. peak {fmt_bytes(est.peak_bytes)}")
        if est.adapter_bytes:
            facts.append(f"adapter {fmt_file_bytes(est.adapter_bytes)}")
        if est.trainable_params:
            facts.append(f"{fmt_count(est.trainable_params)} trainable")
        if self.estimate_note:
            facts.append(f"[yellow]{_markup_escape(self.estimate_note)}[/]")
        facts.append(_alpha_words(r))
        from peft_advisor.core.advise import recipe_fit

        fit, words = recipe_fit(r)
        if fit != "ok" and (fit or words):
            facts.append(f"[yellow]{_markup_escape(words)}[/]")
        self.query_one("#recipe-title", Static).update(" · ".join(facts))
        self.query_one("#preview", Static).update(rc.dumps(r))

    def _file_message(self, text: str, error: bool = False) -> None:
        msg = self.query_one("#file-message", Static)
        msg.set_class(error, "error")
        msg.update(text)

    def _check_fields(self) -> bool:
        if self.bad:
            first = next(iter(self.bad.values()))
            self._file_message(f"fix the field marked in red first: {first}", error=True)
            return False
        return True

    # ------------------------------------------------------------------ export / import / launch

    def on_button_pressed(self, event: Button.Pressed) -> None:
        {"export": self.action_export, "import": self.action_import, "launch": self.action_launch}[event.button.id]()

    def _path(self) -> Path | None:
        text = self.query_one("#file-path", Input).value.strip()
        if not text:
            self._file_message("type a file name first", error=True)
            return None
        try:
            return expand_home(text, ExitCode.USAGE)
        except UserError as err:
            self._file_message(str(err), error=True)
            return None

    def action_export(self) -> None:
        path = self._path()
        if path is None or not self._check_fields():
            return
        if path.is_dir():
            self._file_message(f"{path}: is a folder; give a file name for the recipe", error=True)
            return
        if path.exists():
            from peft_advisor.tui.screens.confirm import ConfirmScreen

            self.app.push_screen(ConfirmScreen(f"{path} exists. Overwrite it?"), lambda yes: yes and self._save(path, True))
            return
        self._save(path, False)

    def _save(self, path: Path, force: bool) -> None:
        try:
            rc.save(self.recipe, path, force=force)
        except UserError as err:
            self._file_message(str(err), error=True)
            return
        self._file_message(f"wrote {path}{_where(path, self.recipe)}")

    def action_import(self) -> None:
        """Choose the file in a picker (a folder tree of .toml files); the chosen path fills the
        file field, then imports."""
        from peft_advisor.tui.screens.file_picker import RecipePickerScreen

        def chosen(path: str | None) -> None:
            if path:
                self.query_one("#file-path", Input).value = path
                self.import_file()

        self.app.push_screen(RecipePickerScreen(self.query_one("#file-path", Input).value), chosen)

    def import_file(self) -> None:
        """Import the file the file field names; a file with problems lists them and changes nothing."""
        path = self._path()
        if path is None:
            return
        try:
            text = path.read_text(encoding="utf-8-sig")  # as rc.load: a byte-order mark is read past
        except (OSError, UnicodeDecodeError) as err:
            self._file_message(f"{path}: cannot read: {getattr(err, 'strerror', None) or err}", error=True)
            return
        found = rc.problems(text)
        if found:
            listed = "\n".join(f"{path}: {p}" for p in found[:8])
            more = f"\n… and {len(found) - 8} more" if len(found) > 8 else ""
            self._file_message(f"not imported, nothing changed:\n{listed}{more}", error=True)
            return
        try:
            recipe = rc.loads(text, source=str(path), allow_empty=False)
        except UserError as err:  # an empty file
            self._file_message(f"not imported, nothing changed: {err}", error=True)
            return
        self.set_recipe(recipe, file_path=str(path))
        self._file_message(f"imported {path}")

    def action_launch(self) -> None:
        if not self._check_fields():
            return
        from peft_advisor.core.advise import recipe_fit

        fit, words = recipe_fit(self.recipe)
        if fit != "ok" and (fit or words):  # tight, or over its budget: ask first
            from peft_advisor.tui.screens.confirm import ConfirmScreen

            question = f"{self.recipe.method.name}: {words}. Launch anyway?"
            self.app.push_screen(ConfirmScreen(question), lambda yes: yes and self._launch())
            return
        self._launch()

    def _launch(self) -> None:
        from peft_advisor.tui.launching import launch_recipe

        try:
            run_dir, launched = launch_recipe(self.app.services, self.recipe)
        except UserError as err:
            self._file_message(str(err), error=True)
            return
        self._file_message(f"launched {run_dir}")
        from peft_advisor.tui.messages import MonitorRequested

        self.post_message(MonitorRequested(run_dir, launched))


def _following(recipe: rc.Recipe, key: str, value) -> dict:
    """What follows an edit: alpha follows the rank (or the method's rule), and output.dir follows
    the model and method while it is still their default (`runs/<model>-<method>`)."""
    changes: dict = {}
    if key == "method.rank" and isinstance(value, int) and not isinstance(value, bool):
        changes.update(_alpha_change(recipe, value))
    if key == "method.name" and isinstance(value, str):
        changes.update(_alpha_change(recipe, recipe.method.rank, value))
    if key in ("model.id", "method.name") and isinstance(value, str) and value.strip():
        model, method = recipe.model.id, recipe.method.name
        if recipe.output.dir == rc.default_output_dir(model, method):
            new = {"model.id": model, "method.name": method, key: value.strip()}
            changes["output.dir"] = rc.default_output_dir(new["model.id"], new["method.name"])
    return changes


def _alpha_change(recipe: rc.Recipe, rank: int, method: str | None = None) -> dict:
    """Alpha follows the catalog's rule (`catalog.alpha_for`) while it still equals the rule's
    value for the old rank; an alpha set otherwise is kept (the title says so)."""
    from peft_advisor.core.catalog import METHOD_IDS, alpha_for

    m = recipe.method
    method = method or m.name
    if m.name not in METHOD_IDS or method not in METHOD_IDS or m.alpha != alpha_for(m.name, m.rank):
        return {}
    return {"method.alpha": alpha_for(method, rank)}


def _alpha_words(recipe: rc.Recipe) -> str:
    from peft_advisor.core.catalog import METHOD_IDS, alpha_for, alpha_rule

    m = recipe.method
    if m.name not in METHOD_IDS:
        return f"alpha {m.alpha}"
    rule = alpha_rule(m.name)
    return f"alpha {m.alpha} ({rule})" if m.alpha == alpha_for(m.name, m.rank) else f"alpha {m.alpha} (kept; the rule is {rule})"


def _where(path: Path, recipe: rc.Recipe) -> str:
    """Where a written file lies, in words: beside its run folder, or the folder it went to."""
    run_dir = Path(recipe.output.dir).expanduser()
    if path.parent.resolve() == run_dir.parent.resolve() and path.stem == run_dir.name:
        return f", beside its run folder {run_dir}/"
    return f" in {path.resolve().parent}/"


def _markup_escape(text: str) -> str:
    return str(text).replace("[", r"\[")
