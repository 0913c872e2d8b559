"""A multi grader's `calculate_output`: a small arithmetic language evaluated over a whitelisted AST.

OpenAI's list (guides/graders#multigraders): the sub-graders' names as variables, + - * / and ^
(power), min max abs floor ceil exp sqrt log. `**` is accepted for power as well, since `^` in Python
means xor and people write either. Nothing else parses: no attributes, subscripts, keywords,
comparisons or names other than the sub-graders', so a formula cannot reach Python; it is never
given to eval.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Callable, Mapping

FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min, "max": max, "abs": abs, "floor": math.floor, "ceil": math.ceil,
    "exp": math.exp, "sqrt": math.sqrt, "log": math.log,
}
ARITY = {"abs": (1, 1), "floor": (1, 1), "ceil": (1, 1), "exp": (1, 1), "sqrt": (1, 1), "log": (1, 2),
         "min": (1, 64), "max": (1, 64)}
_OPERATORS: dict[type, Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b, ast.Pow: math.pow, ast.BitXor: math.pow,
}


MAX_DEPTH = 100
"""Deepest formula tree: evaluation recurses once per level, and no real formula comes close."""


class FormulaError(ValueError):
    """A formula that does not parse, or names something that is not a sub-grader."""


@dataclass(frozen=True)
class Formula:
    text: str
    tree: ast.Expression
    names: frozenset[str]
    """The sub-graders the formula reads."""

    def evaluate(self, scores: Mapping[str, float]) -> float:
        """The formula's value; ArithmeticError or ValueError (x/0, sqrt(-1), overflow) for the caller
        to report for this sample."""
        value = _evaluate(self.tree.body, scores)
        if not math.isfinite(value):
            raise ArithmeticError(f"calculate_output gave {value}")
        return value


def parse_formula(text: str, variables: frozenset[str] | set[str], max_chars: int = 1000) -> Formula:
    """A checked formula over `variables`; FormulaError saying what is wrong and what is allowed."""
    if len(text) > max_chars:
        raise FormulaError(f"is {len(text)} characters, over {max_chars}: combine fewer terms")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise FormulaError(f"does not parse at character {exc.offset}: {exc.msg} — "
                           "e.g. \"0.5 * a + 0.5 * b\"") from None
    except RecursionError:
        raise FormulaError(f"nests deeper than {MAX_DEPTH} levels: write it flatter") from None
    if _depth(tree) > MAX_DEPTH:
        raise FormulaError(f"nests deeper than {MAX_DEPTH} levels: write it flatter")
    names: set[str] = set()
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        _check_node(node, variables, names, called)
    return Formula(text, tree, frozenset(names))


def _depth(tree: ast.AST) -> int:
    """The tree's depth, counted without recursion (a deep tree is what is being guarded against)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def _check_node(node: ast.AST, variables: frozenset[str] | set[str], names: set[str], called: set[int]) -> None:
    allowed_list = "+ - * / ^, parentheses, numbers, sub-grader names and " + ", ".join(FUNCTIONS)
    if isinstance(node, ast.Name):
        if id(node) in called:
            return  # the Call branch checks a function's name
        if node.id not in variables:
            raise FormulaError(f"names '{node.id}', which is not one of its graders ({', '.join(sorted(variables))})")
        names.add(node.id)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise FormulaError(f"calls something other than {', '.join(FUNCTIONS)}")
        low, high = ARITY[node.func.id]
        if node.keywords or not low <= len(node.args) <= high:
            raise FormulaError(f"calls {node.func.id} with {len(node.args)} argument(s): it takes "
                               f"{low if low == high else f'{low} to {high}'}, without keywords")
        if node.func.id in variables:
            raise FormulaError(f"'{node.func.id}' is both a grader's name and a function: rename the grader")
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise FormulaError(f"holds {node.value!r}: only numbers are constants")
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _OPERATORS:
            raise FormulaError(f"uses an operator other than {allowed_list}")
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.USub, ast.UAdd)):
            raise FormulaError(f"uses an operator other than {allowed_list}")
    elif not isinstance(node, (ast.Expression, ast.Load, ast.operator, ast.unaryop)):
        raise FormulaError(f"holds a {type(node).__name__}: only {allowed_list} are allowed")


def _evaluate(node: ast.AST, scores: Mapping[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(scores[node.id])
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, scores)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        return float(_OPERATORS[type(node.op)](_evaluate(node.left, scores), _evaluate(node.right, scores)))
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)  # the parse admitted nothing else
    return float(FUNCTIONS[node.func.id](*(_evaluate(a, scores) for a in node.args)))
