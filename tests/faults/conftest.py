"""The trainer fixtures (tiny random Llama, its data, `make_recipe`) for the fault tests: the same
ones tests/train uses, imported rather than copied."""

from tests.train.conftest import make_recipe, sums_file, tiny_model  # noqa: F401 (pytest fixtures)
