"""``replens reproduce``: every table and figure of the seed from one command, beside the seed's numbers.

Typical use::

    from replens.apps.reproduce import RecipeContext, get_recipe, list_recipes, run_recipe

    for r in list_recipes():
        print(r.id, r.title, r.needs)
    result = run_recipe("table-5.2", RecipeContext(budget="small", data=None, out="runs/reproduce/t52"))
"""

from replens.apps.reproduce.registry import (
    BUDGETS,
    PAPER_TRAIN,
    SMALL_TRAIN,
    Recipe,
    RecipeContext,
    RecipeResult,
    get_recipe,
    list_recipes,
    recipe,
    resolve_data,
    run_recipe,
)
from replens.apps.reproduce.seed import load_seed_numbers

__all__ = [
    "BUDGETS",
    "PAPER_TRAIN",
    "SMALL_TRAIN",
    "Recipe",
    "RecipeContext",
    "RecipeResult",
    "get_recipe",
    "list_recipes",
    "load_seed_numbers",
    "recipe",
    "resolve_data",
    "run_recipe",
]
