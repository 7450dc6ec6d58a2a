"""A training process for the two-process test (importable: torch.multiprocessing spawns it)."""

import os

import torch


def train_one_process(rank: int, world_size: int, port: int, output: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from flowkit.presets.glow import GlowConfig
    from flowkit.train.distributed import teardown
    from tests.train.conftest import blob_images, make_trainer

    config = GlowConfig(K=2, L=2, input_shape=(1, 8, 8), hidden_channels=16, seed=0)
    trainer = make_trainer(
        config,
        blob_images(96, 0),
        blob_images(64, 1),
        output,
        epochs=1,
        ema=False,
        test_batch_size=16,
    )
    result = trainer.fit()
    if rank == 0:
        torch.save(
            {"state": trainer.flow.state_dict(), "test_bpd": result.test_bpd},
            os.path.join(output, "final.pt"),
        )
    teardown(trainer.process)
