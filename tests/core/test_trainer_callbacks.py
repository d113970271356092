import gc

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
