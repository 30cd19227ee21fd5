"""The fault suite reuses the trainer tests' tiny model, data and recipes."""

from tests.train.conftest import make_recipe, sums_file, tiny_model  # noqa: F401 (fixtures)
