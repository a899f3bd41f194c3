"""Build recipes: models the build trains itself from data that packages ship."""

from __future__ import annotations

from importlib import import_module

RECIPES = {"digits": "maas.recipes.digits"}


def get_recipe(name: str):
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r} (known: {', '.join(RECIPES)})")
    return import_module(RECIPES[name])
