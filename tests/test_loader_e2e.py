"""The compiled loader stage over a store written by the compiled offline stage, through a DataLoader."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import pytest
import torch

from pcdag.cli import main
from pcdag.compiler import compile_graph
from pcdag.graphs import load_graph
from pcdag.runtime.loader import dataset_from_plan, make_loader

GRAPH = """
pcdag: 1
name: synthetic-views
settings: {seed: 3}
nodes:
  rooms: {type: SyntheticSource, params: {n_scenes: 6, points: 3000, splits: [train, val], val_fraction: 0.5}}
  store: {type: Store, params: {path: STORE}, inputs: {cloud: rooms}}
  rotate: {type: RandomRotate, inputs: {cloud: store}}
  jitter: {type: RandomJitter, inputs: {cloud: rotate}}
  grid: {type: GridSample, params: {grid_size: 0.1}, inputs: {cloud: jitter}}
  color: {type: NormalizeColor, inputs: {cloud: grid}}
"""


def test_compiled_loader_reads_the_store_and_batches_with_offsets(tmp_path: Path, capsys) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(GRAPH.replace("STORE", str(tmp_path / "store")))
    assert main(["preprocess", str(path), "--quiet"]) == 0
    plan = compile_graph(load_graph(path))
    ds = dataset_from_plan(plan)
    assert all(e.split == "train" for e in ds.entries) and 0 < len(ds) < 6

    batch = next(iter(make_loader(ds, batch_size=2, workers=2, shuffle=False)))
    n = batch["coord"].shape[0]
    assert batch["offset"].tolist()[-1] == n and len(batch["offset"]) == min(2, len(ds))
    assert batch["color"].dtype == torch.float32 and float(batch["color"].max()) <= 1.0
    assert batch["grid_coord"].dtype == torch.int32 and batch["normal"].shape == (n, 3)
    # one point per 0.1 m voxel of the augmented coordinates
    first = batch["coord"][: batch["offset"][0]].numpy()
    vox = np.floor(first / 0.1).astype(np.int64)
    assert len(np.unique(vox, axis=0)) == len(vox)

    again = ds[0]
    np.testing.assert_array_equal(again["coord"].numpy(), ds[0]["coord"].numpy())  # seeded per epoch and index
    ds.set_epoch(1)
    assert not np.array_equal(again["coord"].numpy(), ds[0]["coord"].numpy())


def test_loader_skips_scenes_left_by_an_older_run(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(GRAPH.replace("STORE", str(tmp_path / "store")).replace("splits: [train, val]", "splits: [train]"))
    assert main(["preprocess", str(path), "--quiet", "--set", "rooms.val_fraction=0.0"]) == 0
    assert (
        main(["preprocess", str(path), "--quiet", "--set", "rooms.val_fraction=0.0", "--set", "rooms.n_scenes=2"]) == 0
    )
    with pytest.raises(ValueError, match="written by other offline parameters.*run `pcdag preprocess`"):
        dataset_from_plan(compile_graph(load_graph(path)))  # the graph as written asks for 6 scenes
    graph = load_graph(path)
    graph.nodes["rooms"] = attrs.evolve(
        graph.nodes["rooms"], params={**graph.nodes["rooms"].params, "n_scenes": 2, "val_fraction": 0.0}
    )
    ds = dataset_from_plan(compile_graph(graph))
    assert len(ds.store.entries()) == 6 and len(ds) == 2
