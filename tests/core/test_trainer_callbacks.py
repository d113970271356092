import gc

import pytest

from transferkit.engine.trainer import FrozenGarbageCollector, build_trainer
from transferkit.spec import TrainConfig


def test_frozen_gc_moves_live_objects_out_of_collection_and_back():
    assert gc.get_freeze_count() == 0
    survivor = [object() for _ in range(1000)]
    cb = FrozenGarbageCollector()
    try:
        cb.on_fit_start(None, None)
        assert gc.get_freeze_count() >= len(survivor)  # everything alive at fit start is frozen
        garbage = []
        garbage.append(garbage)  # a reference cycle created during training is still collected
        del garbage
        assert gc.collect() >= 1
    finally:
        cb.teardown(None, None, "fit")
    assert gc.get_freeze_count() == 0
    assert not cb.froze


def test_frozen_gc_leaves_a_process_that_froze_objects_itself_alone():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        cb = FrozenGarbageCollector()
        cb.on_fit_start(None, None)
        cb.teardown(None, None, "fit")
        assert gc.get_freeze_count() == frozen  # not unfrozen by us
    finally:
        gc.unfreeze()


def test_every_training_run_freezes_the_garbage_collector(tmp_path):
    trainer = build_trainer(TrainConfig(accelerator="cpu"), tmp_path, "val/loss", "min")
    assert sum(isinstance(c, FrozenGarbageCollector) for c in trainer.callbacks) == 1


class RecordingWriter:
    def add_histogram_raw(self, tag, **fields):
        self.fields = fields


def test_histogram_matches_numpy_and_leaves_non_finite_values_out():
    import numpy as np
    import torch

    from transferkit.engine.module import write_histogram

    values = torch.randn(5000, generator=torch.Generator().manual_seed(0)) * 3
    values[7], values[11] = float("nan"), float("inf")
    writer = RecordingWriter()
    write_histogram(writer, "w", values.view(50, 100), step=3)
    kept = values.numpy()[np.isfinite(values.numpy())].astype(np.float64)
    counts, edges = np.histogram(kept, bins=64)
    f = writer.fields
    assert f["num"] == kept.size == 4998 and f["global_step"] == 3
    assert f["bucket_counts"] == counts.tolist()
    assert np.allclose(f["bucket_limits"], edges[1:]) and (f["min"], f["max"]) == (kept.min(), kept.max())
    assert f["sum"] == pytest.approx(kept.sum()) and f["sum_squares"] == pytest.approx((kept ** 2).sum(), rel=1e-5)
    write_histogram(writer, "constant", torch.full((10,), 2.0), step=0)
    assert sum(writer.fields["bucket_counts"]) == 10 and writer.fields["bucket_limits"][-1] == 2.5
