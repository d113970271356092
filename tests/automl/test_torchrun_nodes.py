"""Multi-node training through torchrun: two "nodes" on this machine (gloo on the CPU, one process each) train one
model with DDP through Lightning's TorchElasticEnvironment; only global rank 0 writes results."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from automl_helpers import TINY, child_env, data_args

pytestmark = pytest.mark.slow  # child processes: seconds each


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_torchrun_nodes_train_together_and_only_rank_zero_writes(digits, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    port = _free_port()
    # Each node gets its own -r folder, as machines have their own disks: rank 1's must stay unwritten.
    folders = [tmp_path / "node0", tmp_path / "node1"]
    procs = []
    for rank, folder in enumerate(folders):
        out = open(tmp_path / f"node{rank}.txt", "wb")
        procs.append(subprocess.Popen(
            [str(torchrun), "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank), "--master-addr",
             "127.0.0.1", "--master-port", str(port), "-m", "transferkit", "classification", "train", "-r",
             str(folder), *data_args(digits), *TINY, "train.batch_size=4", "train.accelerator=cpu"],
            env=child_env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        out.close()
    codes = []
    for rank, proc in enumerate(procs):
        try:
            codes.append(proc.wait(timeout=600))  # a hang guard only
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
    logs = [(tmp_path / f"node{rank}.txt").read_text(errors="replace") for rank in range(2)]
    assert codes == [0, 0], "\n".join(text[-3000:] for text in logs)
    for rank, text in enumerate(logs):
        assert f"rank {rank} of 2 (node {rank}) trained" in " ".join(text.split()), text[-2000:]
    assert "torchrun launch: 2 node(s) x 1 process(es), world size 2" in " ".join(logs[0].split())
    metrics = json.loads((folders[0] / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_that_trained"] == [0, 1]
    assert len((folders[0] / "status.json").read_text().splitlines()) == 1  # one writer, one line per epoch
    assert sorted(p.name for p in folders[0].iterdir()) == sorted(
        [".tkit-run.json", "best.ckpt", "last.ckpt", "log.txt", "metrics.json", "spec.yaml", "status.json", "tensorboard"])
    assert not folders[1].exists()  # rank 1 wrote nothing


def test_the_torchrun_launch_decides_the_shape_and_a_contradicting_spec_is_refused():
    from transferkit.engine.trainer import cluster_shape
    from transferkit.errors import SpecError
    from transferkit.spec import TrainConfig

    torchrun = {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}
    assert cluster_shape(TrainConfig(), torchrun) == (2, 4)
    assert cluster_shape(TrainConfig(num_nodes=2, num_devices=4), torchrun) == (2, 4)
    assert cluster_shape(TrainConfig(num_devices=2), {}) == (1, 2)  # no launcher: the spec's own
    with pytest.raises(SpecError, match="train.num_nodes=3 x train.num_devices=1 does not match the torchrun launch"):
        cluster_shape(TrainConfig(num_nodes=3), torchrun)
