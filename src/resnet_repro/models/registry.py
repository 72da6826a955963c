"""The model group (``conf/model/``): one row per model (as torchvision's ``register_model``),
its schema and checks, without torch (the command line checks a config before torch is imported).
A new model is a row here, a YAML in ``conf/model/`` and a module with its builder.

- the CIFAR nets (``resnet_cifar``, ``preact_cifar``) have depth 6n+2 for any n >= 1, written as
  ``model.n`` or ``model.depth``; the arithmetic between the two is here;
- the ImageNet nets of Table 1 (``resnet18`` ... ``resnet152``) have a fixed depth.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..checks import choice
from ..errors import ConfigError


@dataclass(frozen=True)
class Model:
    """A model's row: its ``model.name``; its builder (``module:function`` in this package) and the
    ``model.*`` keys it is called with; its depth (None: any 6n+2, from ``model.n`` or
    ``model.depth``); the shortcut its residual form has (None: ``model.shortcut``'s option);
    whether ``trainer.stack`` can group it; and its run-name prefix (``preact-resnet110-seed0``)."""

    name: str
    builder: str
    args: tuple[str, ...]
    depth: int | None = None
    shortcut: str | None = None
    stacks: bool = False
    prefix: str = ""


_IMAGENET_ARGS = ("num_classes", "in_channels", "residual", "cifar_stem")
REGISTRY = {
    m.name: m
    for m in (
        Model(
            "resnet_cifar",
            "cifar_resnet:resnet_cifar",
            ("depth", "residual", "shortcut", "num_classes", "in_channels"),
            stacks=True,
        ),
        Model(
            "preact_cifar",
            "preact_resnet:preact_resnet_cifar",
            ("depth", "residual", "num_classes", "in_channels"),
            shortcut="A",
            prefix="preact-",
        ),
        *(
            Model(f"resnet{d}", f"imagenet_resnet:resnet{d}", _IMAGENET_ARGS, depth=d, shortcut="B")
            for d in (18, 34, 50, 101, 152)
        ),  # Table 1's nets: projections where the shape changes
    )
}
MODELS = tuple(REGISTRY)
CIFAR_MODELS = tuple(n for n, m in REGISTRY.items() if m.depth is None)  # depth 6n+2
IMAGENET_MODELS = {n: m.depth for n, m in REGISTRY.items() if m.depth is not None}
SHORTCUTS = ("A", "B", "C")
PAPER_DEPTHS = (20, 32, 44, 56, 110, 1202)  # the CIFAR depths of the paper's Table 6
DEFAULT_DEPTH = 20
MIN_DEPTH = 8  # n = 1


@dataclass
class ModelConfig:
    name: str = "resnet_cifar"
    # Depth is written either as the paper's n or as depth = 6n+2; both are filled in once resolved.
    n: int | None = None
    depth: int | None = None
    residual: bool = True
    shortcut: str = "A"
    num_classes: int = 10
    in_channels: int | None = None  # null: the dataset's (1 for Fashion-MNIST, else 3)
    cifar_stem: bool = False  # ImageNet nets only: a 3x3/1 stem conv and no max-pool


def shortcut_of(model: ModelConfig) -> str | None:
    """The shortcut a net has: its row's, else ``model.shortcut``'s option; plain nets have none."""
    if not model.residual:
        return None
    row = REGISTRY.get(model.name)
    return row.shortcut if row and row.shortcut else model.shortcut


def depth_of_n(n: int) -> int:
    """Layers of the CIFAR net with n blocks per stage: 6n 3x3 convs, the stem and the fc."""
    return 6 * n + 2


def is_cifar_depth(depth: int) -> bool:
    return depth >= MIN_DEPTH and (depth - 2) % 6 == 0


def n_of_depth(depth: int) -> int:
    """n of a CIFAR net of ``depth`` = 6n+2 layers; ValueError for any other depth."""
    if not is_cifar_depth(depth):
        raise ValueError(f"depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
    return (depth - 2) // 6


def depth_or_default(n: int | None, depth: int | None) -> int:
    """The depth a CIFAR net's config asks for: ``depth``, else 6n+2, else the default."""
    if depth is not None:
        return depth
    if n is not None:
        return depth_of_n(n)
    return DEFAULT_DEPTH


def valid_depths_hint() -> str:
    return ", ".join(str(d) for d in PAPER_DEPTHS) + ", ..."


def nearest_depths(depth: int) -> list[int]:
    """The 6n+2 depths on either side of ``depth``, 8 (n=1) the smallest."""
    below = depth - (depth - 2) % 6
    return sorted({d for d in (below, below + 6) if d >= MIN_DEPTH} or {MIN_DEPTH})


def resolve_depth(model: ModelConfig) -> None:
    """Fill in both spellings of the depth, refusing contradictions and depths that are not 6n+2."""
    n, depth = model.n, model.depth
    if n is not None and n < 1:
        raise ConfigError(
            f"model.n={n} is not valid: n must be a positive integer (depth = 6n+2; "
            f"n=3,5,7,9,18 give depths 20,32,44,56,110)."
        )
    if depth is not None and not is_cifar_depth(depth):
        raise ConfigError(
            f"model.depth={depth} is not a CIFAR ResNet depth: depth must be 6n+2 "
            f"({valid_depths_hint()}). Nearest valid: "
            f"{' or '.join(map(str, nearest_depths(depth)))}."
        )
    if n is not None and depth is not None and depth_of_n(n) != depth:
        raise ConfigError(
            f"model.n={n} and model.depth={depth} contradict each other: n={n} is the "
            f"{depth_of_n(n)}-layer net, depth={depth} is n={n_of_depth(depth)}. Give only one of "
            f"them."
        )
    model.depth = depth_or_default(n, depth)
    model.n = n_of_depth(model.depth)


def fix_imagenet_depth(model: ModelConfig) -> None:
    """An ImageNet net's depth is its name's: refuse any other, and fill it in."""
    d = IMAGENET_MODELS[model.name]
    if model.depth not in (None, d) or model.n is not None:
        raise ConfigError(
            f"model.name={model.name} is the {d}-layer ImageNet ResNet; its depth is fixed "
            f"(model.depth={model.depth}, model.n={model.n} given). Choose another model "
            f"(model=resnet34, ...)."
        )
    model.depth = d


def check_model(model: ModelConfig) -> None:
    """The model group's value-level rules; fills in ``model.depth`` (and ``model.n``, CIFAR
    nets)."""
    choice("model.name", model.name, MODELS)
    if model.name in IMAGENET_MODELS:
        fix_imagenet_depth(model)
    else:
        resolve_depth(model)
    choice("model.shortcut", model.shortcut, SHORTCUTS)
    if model.num_classes < 2:
        raise ConfigError(f"model.num_classes={model.num_classes} is not valid: it must be >= 2.")
