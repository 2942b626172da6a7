import pytest

from lowrank_jax.config import ConfigError, parse_arg


def test_parse_arg_types_and_flags():
    args = parse_arg(
        "runlocal,attention=performer,rank=8,scale=0.5",
        runlocal=False,
        attention="softmax",
        rank=0,
        scale=1.0,
    )
    assert (args.runlocal, args.attention, args.rank, args.scale) == (True, "performer", 8, 0.5)
    assert parse_arg(None, rank=3).rank == 3
    assert parse_arg("flag=false", flag=True).flag is False


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("bogus=1", "config arg 'bogus': unknown; valid: rank, runlocal"),
        ("rank=x", "config arg 'rank': must be int, got 'x'"),
        ("rank", "config arg 'rank': needs a value"),
        ("runlocal=maybe", "config arg 'runlocal': must be true or false"),
    ],
)
def test_parse_arg_errors(arg, message):
    with pytest.raises(ConfigError, match=message):
        parse_arg(arg, runlocal=False, rank=0)
