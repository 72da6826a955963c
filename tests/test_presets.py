"""Every preset of the ResNet family composes and trains a few iterations on tiny files in the
official layouts; epoch schedules turn into iterations; the d2l net learns Fashion-MNIST."""

import pytest

from resnet_repro.config import iteration_schedule
from resnet_repro.training.train import train

from .helpers import cfg_of, write_cifar100, write_cifar_pickles, write_idx

TINY = [
    "trainer.device=cpu",
    "trainer.progress=false",
    "trainer.batch_size=8",
    "trainer.eval_batch_size=16",
    "trainer.log_every=1",
    "trainer.eval_every=2",
    "schedule.unit=iterations",
    "schedule.iterations=2",
    "schedule.milestones=[1]",
    "dataset.verify=false",
    "dataset.download=false",
    "diagnostics.layer_stats_images=8",
]


@pytest.mark.parametrize(
    "preset, model, depth, data, extra",
    [
        ("d2l_fashion_mnist", "resnet18", 18, "fmnist", ["dataset.image_size=40"]),
        ("resnet18_cifar10", "resnet18", 18, "cifar10", ["dataset.val_size=20"]),
        ("resnet50_cifar100", "resnet50", 50, "cifar100", []),
        ("paper_resnet56", "resnet_cifar", 56, "cifar10", ["dataset.val_size=20"]),
        ("preact_resnet110", "preact_cifar", 110, "cifar10", ["dataset.val_size=20"]),
    ],
)
@pytest.mark.slow
def test_each_preset_composes_and_trains(tmp_path, preset, model, depth, data, extra):
    {"fmnist": write_idx, "cifar10": write_cifar_pickles, "cifar100": write_cifar100}[data](
        tmp_path
    )
    cfg = cfg_of(f"experiment={preset}", f"dataset.root={tmp_path}", *TINY, *extra)
    assert (cfg.model.name, cfg.model.depth) == (model, depth)
    s = train(cfg, tmp_path / "run")
    assert s["status"] == "completed" and s["iterations"] == 2 and s["model"] == model
    assert (tmp_path / "run" / "layer_stats.csv").is_file()


def test_preset_recipes():
    d2l = cfg_of("experiment=d2l_fashion_mnist")
    assert (d2l.model.in_channels, d2l.model.num_classes, d2l.dataset.image_size) == (1, 10, 96)
    assert (d2l.optimizer.lr, d2l.optimizer.momentum, d2l.trainer.batch_size) == (0.05, 0.0, 256)
    assert iteration_schedule(d2l).iterations == 10 * (60000 // 256)  # 10 epochs of the full 60k
    p56 = iteration_schedule(cfg_of("experiment=paper_resnet56"))
    assert (p56.iterations, p56.milestones) == (
        182 * 351,
        [91 * 351, 136 * 351],
    )  # ~64k, ~32k, ~48k
    r50 = cfg_of("experiment=resnet50_cifar100")
    assert (r50.model.num_classes, r50.model.cifar_stem, r50.dataset.protocol) == (
        100,
        True,
        "full",
    )
    assert cfg_of("experiment=preact_resnet110").name == "preact-resnet110-seed0"
    assert cfg_of("experiment=resnet18_cifar10", "model.residual=false").name == "plain18-seed0"


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (
            ["model=resnet50", "model.depth=56"],
            "model.name=resnet50 is the 50-layer ImageNet ResNet; its depth is fixed",
        ),
        (
            ["dataset=cifar100"],
            "model.num_classes=10 does not fit dataset.name=cifar100, which has 100 classes",
        ),
        (
            ["dataset=fashion_mnist", "model.in_channels=3"],
            "model.in_channels=3 does not fit dataset.name=fashion_mnist",
        ),
        (
            ["schedule.unit=days"],
            "schedule.unit='days' is not valid. Valid choices: iterations, epochs.",
        ),
    ],
)
def test_family_config_errors_are_clear(overrides, needle):
    from resnet_repro.errors import ConfigError

    with pytest.raises(ConfigError, match=needle):
        cfg_of(*overrides)


@pytest.mark.realdata
def test_d2l_resnet18_learns_fashion_mnist_at_28px(data_root, tmp_path):
    if not (data_root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("the data folder has no FashionMNIST/raw")
    cfg = cfg_of(
        "experiment=d2l_fashion_mnist",
        f"dataset.root={data_root}",
        "dataset.image_size=null",
        "trainer.device=cpu",
        "trainer.progress=false",
        "trainer.batch_size=128",
        "schedule.unit=iterations",
        "schedule.iterations=120",
        "trainer.eval_every=120",
        "trainer.log_every=20",
        "trainer.eval_batch_size=1000",
        "diagnostics.layer_stats=off",
    )
    s = train(cfg, tmp_path / "d2l")
    acc = 100 - s["final_test_err"]
    print(
        f"\n[realdata] d2l ResNet-18, Fashion-MNIST 28 px, 120 iterations at batch 128 on CPU: "
        f"test accuracy {acc:.2f}% (chance 10%), {s['images_per_s']:.0f} img/s"
    )
    assert acc > 50


def test_first_look_is_plain_and_residual_20_and_56_for_1000_iterations_on_the_fast_path():
    import yaml

    from resnet_repro.config import config_dir

    preset = yaml.safe_load((config_dir() / "experiment" / "first_look.yaml").read_text())
    assert preset["hydra"]["mode"] == "MULTIRUN"
    assert preset["hydra"]["sweeper"]["params"] == {
        "model.depth": "20,56",
        "model.residual": "true,false",
    }
    c = cfg_of("experiment=first_look", "model.depth=56", "model.residual=false")
    assert c.experiment_name == "first_look" and c.name == "plain56-seed0"
    assert c.schedule.iterations == 1000 and list(c.schedule.milestones) == [500, 750]
    assert (c.trainer.precision, c.trainer.compile, c.trainer.channels_last) == (
        "bf16",
        "default",
        True,
    )
