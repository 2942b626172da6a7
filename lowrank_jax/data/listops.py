"""Long Range Arena ListOps (Tay et al. 2020, arXiv 2011.04006; Nangia & Bowman 2018).

The generator is the dataset: nothing is downloaded. It follows the LRA
reference generator (``lra_benchmarks/data/listops.py``): operators ``[MIN``,
``[MAX``, ``[MED``, ``[SM`` (sum mod 10), values 0–9; below the maximum depth
a node is an operator with probability 0.25 (else a value) with 2..max_args
arguments; a tree's length counts operator tokens, values and ``]`` (not
parentheses) and is kept strictly between ``min_length`` and ``max_length``;
duplicates are dropped. Sources are strings in LRA's released format, with
parentheses: ``( ( ( [MAX 2 ) 9 ) ] )``.
"""

from __future__ import annotations

import random

import numpy as np

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VALUES = tuple(str(v) for v in range(10))
OPERATOR_PROBABILITY = 0.25
# Token ids: 0 pads; the rest is fixed, so ids never depend on the data.
VOCAB = ("<pad>", *OPERATORS, END, *VALUES)
TOKEN_ID = {token: i for i, token in enumerate(VOCAB)}
NUM_CLASSES = 10


def _tree(rng: random.Random, depth: int, max_depth: int, max_args: int):
    """(tree, length) as in the LRA generator: a value, or ((op, a), b), ..., ']'."""
    if depth < max_depth and rng.random() <= OPERATOR_PROBABILITY:
        args = [_tree(rng, depth + 1, max_depth, max_args) for _ in range(rng.randint(2, max_args))]
        tree = (rng.choice(OPERATORS), args[0][0])
        for arg, _ in args[1:]:
            tree = (tree, arg)
        return (tree, END), 2 + sum(length for _, length in args)
    return rng.choice(VALUES), 1


def _to_string(tree) -> str:
    if isinstance(tree, str):
        return tree
    return f"( {_to_string(tree[0])} {_to_string(tree[1])} )"


def generate(
    num: int,
    *,
    seed: int,
    min_length: int = 500,
    max_length: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
) -> list[str]:
    """``num`` distinct ListOps sources, deterministic for ``seed``.

    Example:
      >>> sources = generate(3, seed=0, min_length=5, max_length=40)
      >>> len(sources), all(5 < length(s) < 40 for s in sources)
      (3, True)
    """
    rng = random.Random(seed)
    found: dict[str, None] = {}
    while len(found) < num:
        tree, size = _tree(rng, 1, max_depth, max_args)
        if min_length < size < max_length:
            found.setdefault(_to_string(tree))
    return list(found)


def tokens(source: str) -> list[str]:
    """The tokens of a source, parentheses dropped."""
    return [token for token in source.split() if token not in ("(", ")")]


def length(source: str) -> int:
    """LRA's length: operators, values and ``]``, not parentheses."""
    return len(tokens(source))


def evaluate(source: str) -> int:
    """The value of an expression (with or without LRA's parentheses).

    MIN, MAX, MED = int(np.median(args)), SM = sum mod 10.

    Example:
      >>> evaluate("[MAX 2 9 [MIN 4 7 ] 0 ]"), evaluate("( ( ( [SM 5 ) 8 ) ] )")
      (9, 3)
    """
    stack: list[tuple[str, list[int]]] = []
    result = None
    for token in tokens(source):
        if token in OPERATORS:
            stack.append((token, []))
        elif token == END:
            if not stack:
                raise ValueError(f"unbalanced ListOps expression: {source[:60]!r}")
            op, args = stack.pop()
            value = _apply(op, args)
            if stack:
                stack[-1][1].append(value)
            else:
                result = value
        elif token in VALUES:
            if not stack:
                if result is not None:
                    raise ValueError(f"not one expression: {source[:60]!r}")
                result = int(token)
            else:
                stack[-1][1].append(int(token))
        else:
            raise ValueError(f"unknown ListOps token {token!r}")
    if stack or result is None:
        raise ValueError(f"unbalanced ListOps expression: {source[:60]!r}")
    return result


def _apply(op: str, args: list[int]) -> int:
    if not args:
        raise ValueError(f"{op} without arguments")
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[MED":
        return int(np.median(args))
    return sum(args) % 10


def encode(source: str) -> np.ndarray:
    """Token ids (int32) of a source: parentheses dropped, fixed vocabulary, no padding."""
    try:
        return np.array([TOKEN_ID[token] for token in tokens(source)], np.int32)
    except KeyError as error:
        raise ValueError(f"unknown ListOps token {error.args[0]!r}") from None
