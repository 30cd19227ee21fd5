"""Where a recipe's model and data come from: a local path, or a Hub id. Pure, so that the launcher
can refuse a missing local file (or one that is not a regular file, or too big) at once, before the
trainer child spends seconds importing torch; the child makes the same checks with the same functions.
"""

from __future__ import annotations

from pathlib import Path

from peft_advisor.core.errors import ExitCode, UserError
from peft_advisor.core.files import check_regular
from peft_advisor.core.limits import MAX_DATA_FILE_BYTES

FILE_LOADERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}  # suffix -> `datasets` loader
DATA_SUFFIXES = tuple(FILE_LOADERS)


def expand_home(text: str, code: ExitCode, field: str = "") -> Path:
    """`Path(text).expanduser()`, with `~nosuchuser` one line instead of pathlib's RuntimeError."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise UserError(f"{field + ': ' if field else ''}{text}: no such user's home folder", code) from None


def _looks_local(text: str) -> bool:
    return text.startswith((".", "/", "~")) or "\\" in text


def local_data(path: str, base_dir: Path | None) -> Path | None:
    """The existing local file or folder `path` names (as given, or relative to the recipe's folder),
    None for a Hub dataset id; a path that looks local but is not there is a UserError."""
    candidates = [expand_home(path, ExitCode.BAD_DATA, "data")]
    if base_dir is not None and not Path(path).is_absolute():
        candidates.append(Path(base_dir) / path)
    for candidate in candidates:
        if candidate.exists():
            return checked_data(candidate)
    if Path(path).suffix.lower() in DATA_SUFFIXES or _looks_local(path) or path.count("/") > 1:
        raise UserError(f"data: no such file or folder: {path}", ExitCode.BAD_DATA)
    return None


def checked_data(path: Path) -> Path:
    """A data folder as is; a data file only when it is a regular file under the ceiling. Said from
    `stat` alone, so the launcher refuses a FIFO, a device or a 50 GB sparse file in a moment, where
    the trainer would block on it or read gigabytes before any error."""
    if path.is_dir():
        return path
    try:
        check_regular(path, MAX_DATA_FILE_BYTES, ExitCode.BAD_DATA, "data file", prefix="data: ")
    except OSError as err:
        raise UserError(f"data: {path}: cannot read: {err.strerror or err}", ExitCode.BAD_DATA) from None
    return path


def local_model(model_id: str) -> Path | None:
    """The local model folder `model_id` names, None when it is not a path (a preset or a Hub id);
    a folder without config.json, or a path that is not there, is a UserError."""
    path = expand_home(model_id, ExitCode.UNKNOWN_MODEL, "model.id")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"model.id: {model_id}: folder has no config.json", ExitCode.UNKNOWN_MODEL)
        return path
    if _looks_local(model_id):
        raise UserError(f"model.id: no such folder: {model_id}", ExitCode.UNKNOWN_MODEL)
    return None


def check_sources(model_id: str, data_path: str, base_dir: Path | None) -> None:
    """Both checks, skipping the built-in demo (made on first use, in the child)."""
    if model_id != "demo":
        local_model(model_id)
    if data_path != "demo":
        local_data(data_path, base_dir)
