"""Choose a recipe file to import: a folder tree that shows only folders and .toml files.

The tree starts at the current folder, where the app keeps runs/ (exported recipes sit beside
their runs) and the shipped recipes/ show; a tree cannot climb above its root, so typing a path
stays possible (the field on top), for files elsewhere or under `~`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DirectoryTree, Input, Static


class TomlTree(DirectoryTree):
    """Folders and .toml files only, hidden ones left out: a recipe is all this tree is for."""

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [p for p in paths if not p.name.startswith(".") and (p.suffix == ".toml" or _is_dir(p))]


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a folder we may not read: leave it out rather than fail the listing
        return False


def _short(path: Path) -> str:
    """The path as the file field shows it: relative to the current folder when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (OSError, ValueError):
        return str(path)


class RecipePickerScreen(ModalScreen[str | None]):
    """Dismisses with the chosen file's path (Enter on a .toml file, or Enter in the path field),
    or None on Escape."""

    DEFAULT_CSS = """
    RecipePickerScreen { align: center middle; }
    RecipePickerScreen > Vertical { width: 70; max-width: 100%; height: 80%; border: round $accent;
        background: $surface; padding: 0 1; }
    RecipePickerScreen TomlTree { height: 1fr; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, typed: str = ""):
        super().__init__()
        self.typed = typed

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Import a recipe: Enter on a .toml file; or type a path and press Enter. Esc cancels.")
            yield Input(self.typed, placeholder="path/to/recipe.toml", id="picker-path", compact=True)
            yield TomlTree(".", id="picker-tree")  # runs/ and recipes/ both show from here

    def on_mount(self) -> None:
        self.query_one(TomlTree).focus()

    def on_directory_tree_file_selected(self, event: DirectoryTree.FileSelected) -> None:
        event.stop()
        self.dismiss(_short(Path(event.path)))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip():
            self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
