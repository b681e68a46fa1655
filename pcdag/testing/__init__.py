"""Testing helpers for node authors: hypothesis strategies for clouds and the ``CloudTransform`` contract checks.

Needs the test extras (``pip install pcdag[test]``) for hypothesis.
"""

from pcdag.testing.contract import ContractError, check_reads_declared, check_transform_contract
from pcdag.testing.strategies import make_cloud, point_clouds, rngs, seeds

__all__ = [
    "ContractError",
    "check_reads_declared",
    "check_transform_contract",
    "make_cloud",
    "point_clouds",
    "rngs",
    "seeds",
]
