import collections

import numpy as np
import pytest

from lowrank_jax.data import listops


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("[MIN 3 5 1 ]", 1),
        ("[MAX 3 5 1 ]", 5),
        ("[MED 3 5 1 ]", 3),
        ("[MED 1 2 3 4 ]", 2),  # even count: int(np.median) = int(2.5)
        ("[MED 2 9 ]", 5),  # int(5.5)
        ("[SM 9 8 7 ]", 4),  # 24 mod 10
        ("[MAX [MIN 4 7 ] [SM 5 6 ] 2 ]", 4),
        ("[SM [MED 1 [MAX 2 8 ] 3 4 ] [MIN 9 9 ] ]", 2),  # MED(1, 8, 3, 4) = 3; (3 + 9) mod 10
        ("( ( ( [MAX 2 ) 9 ) ] )", 9),  # LRA's released format
        ("7", 7),
    ],
)
def test_evaluate(source, value):
    assert listops.evaluate(source) == value


@pytest.mark.parametrize("source", ["[MAX 2 3", "[MAX ]", "2 3", "[POW 2 3 ]", "]"])
def test_evaluate_rejects_malformed(source):
    with pytest.raises(ValueError):
        listops.evaluate(source)


def _depth_and_arity(source: str) -> tuple[int, int, int]:
    depth = deepest = 0
    arities, stack = [], []
    for token in listops.tokens(source):
        if token in listops.OPERATORS:
            if stack:
                stack[-1] += 1
            stack.append(0)
            depth += 1
            deepest = max(deepest, depth)
        elif token == "]":
            arities.append(stack.pop())
            depth -= 1
        else:
            stack[-1] += 1
    return deepest, min(arities), max(arities)


def test_generated_sample_respects_the_spec():
    sources = listops.generate(60, seed=3, min_length=20, max_length=300, max_depth=4, max_args=5)
    assert len(set(sources)) == 60
    for source in sources:
        assert 20 < listops.length(source) < 300
        assert set(listops.tokens(source)) <= set(listops.VOCAB[1:])
        deepest, fewest, most = _depth_and_arity(source)
        assert deepest < 4  # a node at depth 4 (the maximum) is always a value
        assert fewest >= 2 and most <= 5
        assert source.startswith("( ") and source.count("(") == source.count(")")


def test_generation_is_deterministic_with_stable_labels():
    first = listops.generate(40, seed=1, min_length=10, max_length=200)
    assert first == listops.generate(40, seed=1, min_length=10, max_length=200)
    assert first != listops.generate(40, seed=2, min_length=10, max_length=200)
    histogram = collections.Counter(listops.evaluate(s) for s in first)
    assert histogram == collections.Counter(
        listops.evaluate(s) for s in listops.generate(40, seed=1, min_length=10, max_length=200)
    )
    assert len(histogram) >= 5  # labels are spread over the ten values


def test_encode_drops_parentheses_with_a_fixed_vocabulary():
    ids = listops.encode("( ( ( [MAX 2 ) 9 ) ] )")
    assert ids.tolist() == [listops.TOKEN_ID[t] for t in ("[MAX", "2", "9", "]")]
    assert ids.dtype == np.int32 and 0 not in ids and len(listops.VOCAB) == 16
    with pytest.raises(ValueError, match="unknown ListOps token"):
        listops.encode("[POW 2 ]")
