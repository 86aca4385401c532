"""The project's Bicep files as pycep parses them, for tests that check what they deploy."""

from __future__ import annotations

from functools import cache
from typing import Any

from pycep import BicepParser

from fanout.azurite import PROJECT_ROOT

INFRA = PROJECT_ROOT / "infra"


@cache
def parse(relative: str) -> dict[str, Any]:
    """The parsed file, read once per test session (pycep takes up to a second a file): callers only read it."""
    return BicepParser().parse(file_path=INFRA / relative)


def config(relative: str, resource: str) -> dict[str, Any]:
    return parse(relative)["resources"][resource]["config"]


def evaluate(expression: Any, names: dict[str, Any]) -> Any:
    """The value of a parsed Bicep expression, for the few forms the tests need (names, `a ? b : c`, `a.b`,
    empty(), concat(), array and object literals, and `[for x in xs: ...]`). pycep writes a string
    literal and a name alike: a string is a name's value when `names` has it, else itself, so a test names
    every parameter and variable its expression reads. Anything else raises: a test never guesses."""
    if isinstance(expression, str):
        return names.get(expression, expression)
    if isinstance(expression, list):
        return [evaluate(item, names) for item in expression]
    if not isinstance(expression, dict):
        return expression
    if "loop_type" in expression:
        detail = expression["loop_type"]["detail"]
        items = evaluate(detail["array_name"], names)
        return [evaluate(expression["config"], {**names, detail["item_name"]: item}) for item in items]
    if "operator" in expression:
        operator = expression["operator"]
        operands = operator["operands"]
        if operator["type"] == "conditional":
            chosen = "true_value" if evaluate(operands["condition"], names) else "false_value"
            return evaluate(operands[chosen], names)
        if operator["type"] == "property_accessor":
            return evaluate(operands["operand_1"], names)[operands["operand_2"]]
        raise NotImplementedError(operator["type"])
    if "function" in expression:
        function = expression["function"]
        arguments = [evaluate(argument, names) for argument in function["parameters"].values()]
        if function["type"] == "empty":
            return not arguments[0]
        if function["type"] == "concat":
            return [item for argument in arguments for item in argument]
        raise NotImplementedError(function["type"])
    return {key: evaluate(value, names) for key, value in expression.items()}
