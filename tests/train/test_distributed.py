import socket

import torch
import torch.multiprocessing as mp

from tests.train.conftest import blob_images, make_trainer
from tests.train.ddp_worker import train_one_process


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(
    tiny_model_config, tmp_path
):
    output = tmp_path / "ddp"
    output.mkdir()
    mp.spawn(train_one_process, args=(2, free_port(), str(output)), nprocs=2, join=True)
    distributed = torch.load(output / "final.pt")

    single = make_trainer(
        tiny_model_config,
        blob_images(96, 0),
        blob_images(64, 1),
        tmp_path / "single",
        epochs=1,
        ema=False,
        test_batch_size=16,
    )
    result = single.fit()
    state = single.flow.state_dict()
    for key, value in state.items():
        if value.is_floating_point():
            assert torch.allclose(value, distributed["state"][key], rtol=1e-4, atol=1e-5), key
    # Sharded evaluation (each process takes every other batch) gives the same bits/dim.
    for (step_a, bpd_a), (step_b, bpd_b) in zip(result.test_bpd, distributed["test_bpd"]):
        assert step_a == step_b and abs(bpd_a - bpd_b) < 1e-4
