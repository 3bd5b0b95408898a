"""``replens reproduce``: every table and figure of the paper from one command, beside the paper's numbers.

Typical use::

    from replens.apps.reproduce import RecipeContext, get_recipe, list_recipes, run_recipe

    for r in list_recipes():
        print(r.id, r.title, r.needs)
    result = run_recipe("table-5.2", RecipeContext(budget="small", data=None, out="runs/reproduce/t52"))
"""

from replens.apps.reproduce.paper import load_paper_numbers
from replens.apps.reproduce.registry import (
    BUDGETS,
    PAPER_TRAIN,
    SMALL_TRAIN,
    SMALL_WORLD_TRAIN,
    Recipe,
    RecipeContext,
    RecipeResult,
    get_recipe,
    list_recipes,
    recipe,
    resolve_data,
    run_recipe,
)

__all__ = [
    "BUDGETS",
    "PAPER_TRAIN",
    "SMALL_TRAIN",
    "SMALL_WORLD_TRAIN",
    "Recipe",
    "RecipeContext",
    "RecipeResult",
    "get_recipe",
    "list_recipes",
    "load_paper_numbers",
    "recipe",
    "resolve_data",
    "run_recipe",
]
