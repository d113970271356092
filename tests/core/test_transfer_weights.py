import torch
from torch import nn

from transferkit.engine.checkpoint import class_row_map, transfer_weights


class Tiny(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.fc = nn.Linear(3, n)


def test_mismatched_head_is_reinitialised_and_reported():
    src = Tiny(1000)
    dst = Tiny(5)
    fresh_fc = dst.fc.weight.detach().clone()
    report = transfer_weights(dst, src.state_dict(), "imagenet")
    assert torch.equal(dst.body.weight, src.body.weight)
    assert set(report.loaded) == {"body.weight", "body.bias"}
    assert set(report.reinitialised) == {"fc.weight", "fc.bias"}
    assert "[1000, 3]" in report.reinitialised["fc.weight"]
    assert torch.equal(dst.fc.weight, fresh_fc)
    assert report.as_dict()["counts"] == {"loaded": 2, "partially_loaded": 0, "reinitialised": 2, "unused": 0}


def test_head_rows_of_shared_classes_are_kept_by_name():
    old_classes = ["cat", "dog", "bird"]
    new_classes = ["Dog", "fish", "cat", "owl"]
    src, dst = Tiny(3), Tiny(4)
    rows = class_row_map(old_classes, new_classes)
    assert rows == [(1, 0), (0, 2)]
    fresh = dst.fc.weight.detach().clone()
    report = transfer_weights(dst, src.state_dict(), "old.ckpt", {"fc.weight": rows, "fc.bias": rows})
    assert torch.equal(dst.fc.weight[0], src.fc.weight[1])  # dog
    assert torch.equal(dst.fc.weight[2], src.fc.weight[0])  # cat
    assert torch.equal(dst.fc.weight[1], fresh[1])  # fish is new
    assert "2 of 4 rows" in report.partially_loaded["fc.weight"]


def test_unused_source_tensors_are_listed():
    src = {"body.weight": torch.zeros(3, 4), "extra.weight": torch.zeros(1)}
    report = transfer_weights(Tiny(2), src, "x")
    assert report.unused == ["extra.weight"]
    assert "body.bias" in report.reinitialised
