"""Testing helpers for node authors: hypothesis strategies for clouds and the node contracts.

Imported here (numpy only): the ``CloudTransform`` checks. The other contracts import torch, so import them from
their modules: ``device_contract`` (device nodes; example inputs in ``examples``), ``shape_contract`` (sources,
``Node.run`` nodes, the store), ``eval_contract`` (evaluators; examples of these three in ``shape_examples``).
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
