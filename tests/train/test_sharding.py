import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from lowrank_jax.train import sharding


def _mesh_cfg(**sizes):
    return ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1, **sizes})


def test_mesh_shape_fills_and_checks():
    assert sharding.mesh_shape(_mesh_cfg(), 8) == {"data": 8, "fsdp": 1, "tensor": 1}
    assert sharding.mesh_shape(_mesh_cfg(tensor=2), 8) == {"data": 4, "fsdp": 1, "tensor": 2}
    with pytest.raises(ValueError, match="does not fit the 8 devices"):
        sharding.mesh_shape(_mesh_cfg(data=3), 8)
    with pytest.raises(ValueError, match="cannot fill 8 devices"):
        sharding.mesh_shape(_mesh_cfg(tensor=3), 8)
    with pytest.raises(ValueError, match="at most one -1"):
        sharding.mesh_shape(_mesh_cfg(fsdp=-1), 8)


def test_logical_rules_respect_divisibility_and_use_each_axis_once():
    mesh = sharding.make_mesh(_mesh_cfg(data=2, fsdp=2, tensor=2))
    assert sharding.logical_to_spec(("embed", "mlp"), (16, 32), mesh) == P("fsdp", "tensor")
    assert sharding.logical_to_spec(("embed", "rank"), (16, 4), mesh) == P("fsdp", None)
    assert sharding.logical_to_spec(("vocab", "embed"), (21, 16), mesh) == P(None, "fsdp")  # 21 % 2
    assert sharding.logical_to_spec(("heads", "mlp"), (16, 32), mesh) == P("tensor", None)


def test_local_rows_and_placed_batch():
    mesh = sharding.make_mesh(_mesh_cfg(tensor=2))
    rows = sharding.local_rows(mesh, 8)
    np.testing.assert_array_equal(rows, np.arange(8))  # one process holds every row
    batch = sharding.place_batch({"x": np.arange(16).reshape(8, 2)}, mesh, 8)
    assert batch["x"].sharding.spec == P(("data", "fsdp"))
    np.testing.assert_array_equal(np.asarray(batch["x"]), np.arange(16).reshape(8, 2))


def test_put_global_keeps_values_and_keys():
    mesh = sharding.make_mesh(_mesh_cfg())
    replicated = jax.sharding.NamedSharding(mesh, P())
    tree = {"w": np.ones((4, 2), np.float32), "key": jax.random.key(3)}
    placed = sharding.put_global(tree, {"w": replicated, "key": replicated})
    np.testing.assert_array_equal(placed["w"], tree["w"])
    assert jax.random.key_data(placed["key"]).tolist() == jax.random.key_data(tree["key"]).tolist()
