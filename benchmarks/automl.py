"""AutoML vs the example spec at the same wall time, and trials per hour, on the demo classification and detection sets.

    python benchmarks/automl.py --quick     # a smoke run: tiny sets, 30 s of search per task
    python benchmarks/automl.py             # full: the demo sets at the examples' sizes, 10 min of search per task
    python benchmarks/automl.py --minutes 4 # the same with 4 min of search per task (~20 min in all)
    python benchmarks/automl.py --minutes 5 --epochs-factor 9   # trials planned for 9x the example's epochs

For each of classification (`digits`, examples/classification.yaml) and DetectNet_v2 (`kitti_digits`,
examples/detectnet_v2.yaml):
  1. `tkit <task> automl` on the example spec with the task's default search space, automl.max_minutes = the
     budget (Hyperband: bad trials stop after an epoch or two), every trial with the example's epochs (or, with
     --epochs-factor F, planned for F times them: automl.max_epochs, Hyperband's resource);
  2. the example spec trained once as it is (its metric and time, for reference);
  3. the example spec trained for the study's whole wall time (train.epochs raised, train.max_minutes = that
     time): the fair baseline, "just train longer".
Printed: the best trial's val metric against (3) and (2) as ratios, the study's trials per hour, and how many
trials finished, were pruned or failed. Results land in benchmarks/results/automl[_quick].json. Run by hand;
tests never run it. The machine is shared: others' CPU load is noted beside the figures.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from common import busy_note, cpu_snapshot, others_cpu_share, write_results  # noqa: E402

from transferkit import api  # noqa: E402
from transferkit.data.demo import build_demo  # noqa: E402
from transferkit.spec import load_spec  # noqa: E402
from transferkit.tasks import get_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODES = {
    "quick": {"budget_s": 30, "classification": {"per_class": 6, "val_per_class": 3, "size": 32},
              "detection": {"num_train": 12, "num_val": 6, "width": 64, "height": 64},
              "cls_overrides": ["data.image_size=32", "train.epochs=2", "train.num_workers=0", "train.histograms=false"],
              "det_overrides": ["data.image_width=64", "data.image_height=64", "train.epochs=2", "train.num_workers=0",
                                "train.histograms=false"]},
    "full": {"budget_s": 600, "classification": {}, "detection": {},
             "cls_overrides": ["train.histograms=false"], "det_overrides": ["train.histograms=false"]},
}


def _best(metrics: dict, monitor: str) -> float | None:
    value = metrics.get("best", {}).get(monitor)
    return float(value) if value is not None else None


def run_task(task: str, monitor: str, example: Path, data_overrides: list[str], overrides: list[str], budget_s: float,
             work: Path, epochs_factor: int | None = None) -> dict:
    base = [*data_overrides, *overrides]
    search = [f"automl.max_minutes={budget_s / 60:.4f}", "automl.max_trials=10000", "automl.algorithm=hyperband"]
    if epochs_factor:
        epochs = load_spec(get_task(task).spec_class, example, base).train.epochs
        search.append(f"automl.max_epochs={epochs * epochs_factor}")
    start = time.time()
    study = api.automl(task, example, work / "automl", [*base, *search])
    study_s = time.time() - start
    start = time.time()
    once = api.train(task, example, work / "example", base)
    once_s = time.time() - start
    # The example spec trained as long as the whole study took: as many epochs as fit.
    longer = api.train(task, example, work / "example_same_time", [*base, "train.epochs=100000",
                                                                   f"train.max_minutes={study_s / 60:.4f}"])
    best = study.get("best", {}).get("value")
    same_time = _best(longer, monitor)
    return {
        "metric": monitor, "study_wall_s": round(study_s, 1), "search_overrides": search, "trials": study.get("trials"),
        "states": study.get("states"), "trials_per_hour": study.get("trials_per_hour"),
        "best_trial": study.get("best", {}).get("number"), "best_value": best,
        "best_params": study.get("best", {}).get("params"),
        "example_once": {"value": _best(once, monitor), "wall_s": round(once_s, 1),
                         "epochs": once.get("epochs_completed")},
        "example_same_time": {"value": same_time, "wall_s": longer.get("wall_time_s"),
                              "epochs": longer.get("epochs_completed")},
        "best_vs_example_same_time": round(best / same_time, 3) if best and same_time else None,
        "best_vs_example_once": round(best / _best(once, monitor), 3) if best and _best(once, monitor) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sets and 30 s of search per task (a smoke run)")
    parser.add_argument("--keep", action="store_true", help="keep the run folders (printed)")
    parser.add_argument("--minutes", type=float, help="search budget per task (default: the mode's)")
    parser.add_argument("--epochs-factor", type=int,
                        help="plan every trial for this many times the example's epochs (automl.max_epochs)")
    args = parser.parse_args()
    mode = dict(MODES["quick" if args.quick else "full"])
    if args.minutes:
        mode["budget_s"] = 60 * args.minutes
    work = Path(tempfile.mkdtemp(prefix="tkit-automl-bench-"))
    snap = cpu_snapshot()
    results = {"mode": "quick" if args.quick else "full", "budget_s": mode["budget_s"], "tasks": {}}
    try:
        digits = work / "digits"
        build_demo("digits", digits, seed=0, **mode["classification"])
        kitti = work / "kitti_digits"
        build_demo("kitti_digits", kitti, seed=0, **mode["detection"])
        plan = [
            ("classification", "val/acc", ROOT / "examples/classification.yaml",
             [f"data.train_dir={digits / 'train'}", f"data.val_dir={digits / 'val'}"], mode["cls_overrides"]),
            ("detectnet_v2", "val/mAP", ROOT / "examples/detectnet_v2.yaml",
             [f"data.train_images={kitti / 'train/images'}", f"data.train_labels={kitti / 'train/labels'}",
              f"data.val_images={kitti / 'val/images'}", f"data.val_labels={kitti / 'val/labels'}"],
             mode["det_overrides"]),
        ]
        for task, monitor, example, data, overrides in plan:
            out = work / task
            out.mkdir()
            row = run_task(task, monitor, example, data, overrides, mode["budget_s"], out, args.epochs_factor)
            results["tasks"][task] = row
            print(f"{task}: best trial {row['best_value']} vs example spec {row['example_same_time']['value']} at the "
                  f"same wall time ({row['study_wall_s']} s): x{row['best_vs_example_same_time']}; vs the example run "
                  f"once ({row['example_once']['wall_s']} s): x{row['best_vs_example_once']}; "
                  f"{row['trials_per_hour']} trials/hour; states {row['states']}")
    finally:
        share = others_cpu_share(snap, cpu_snapshot())
        results["others_cpu_share"] = round(share, 3)
        print(busy_note(share))
        if args.keep:
            print(f"run folders kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    name = "automl_quick" if args.quick else "automl_max_epochs" if args.epochs_factor else "automl"
    path = write_results(name, {**results, "epochs_factor": args.epochs_factor})
    print(json.dumps(results["tasks"], indent=1)[:3000])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
