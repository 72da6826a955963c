import torch
import torchvision.transforms.v2.functional as TF
from torchvision import transforms

from resnet_repro.data.pipeline import (
    DeviceBatches,
    crop_flip,
    normalize,
    pixel_mean,
    random_crop_flip,
)


def _images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(
        1, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8
    )  # no zeros: padding shows


def test_matches_torchvision_crop_and_flip_for_same_offsets():
    x = _images()
    g = torch.Generator().manual_seed(1)
    top = torch.randint(0, 9, (len(x),), generator=g)
    left = torch.randint(0, 9, (len(x),), generator=g)
    flip = torch.randint(0, 2, (len(x),), generator=g).bool()
    ours = crop_flip(x, top, left, flip, pad=4)
    for i in range(len(x)):
        ref = TF.crop(TF.pad(x[i], [4]), int(top[i]), int(left[i]), 32, 32)
        if flip[i]:
            ref = TF.horizontal_flip(ref)
        assert torch.equal(ours[i], ref), i


def test_matches_torchvision_random_transforms_with_their_draws():
    """torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip draw; we replay their
    draws."""
    x = _images(16)
    tv = transforms.Compose(
        [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    )
    for i in range(len(x)):
        torch.manual_seed(100 + i)
        ref = tv(x[i])
        torch.manual_seed(
            100 + i
        )  # the same draws, in torchvision's order: crop offsets, then flip
        top, left, _, _ = transforms.RandomCrop.get_params(TF.pad(x[i], [4]), (32, 32))
        flip = bool(torch.rand(1) < 0.5)
        ours = crop_flip(
            x[i : i + 1], torch.tensor([top]), torch.tensor([left]), torch.tensor([flip]), 4
        )[0]
        assert torch.equal(ours, ref), i


def test_offsets_and_flips_are_uniform_and_independent_per_sample():
    n = 20000
    x = torch.zeros(n, 1, 32, 32, dtype=torch.uint8)
    x[:, :, 0, 0] = 255  # a marker pixel at the top-left corner
    x[:, :, 0, 1] = 128
    out = random_crop_flip(x, 4, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    hit = (out[:, 0] == 255).nonzero()
    # the marker is inside the crop when top<=4 and left<=4 (or mirrored): 25 of 81 offsets
    frac = len(hit) / n
    assert abs(frac - 25 / 81) < 0.02
    rows = hit[:, 1]
    assert set(rows.tolist()) <= set(range(5)) and all(
        abs((rows == r).float().mean() - 0.2) < 0.03 for r in range(5)
    )
    # flips: the 128 neighbour is to the right of the marker unless flipped
    b, r, c = hit[:, 0], hit[:, 1], hit[:, 2]
    right = out[b, 0, r, (c + 1).clamp(max=31)] == 128
    left = out[b, 0, r, (c - 1).clamp(min=0)] == 128
    inner = (c > 0) & (c < 31)
    flipped = (left & inner).float().sum() / inner.sum()
    assert abs(flipped - 0.5) < 0.03 and torch.all(right[inner] ^ left[inner])


def test_values_bounded_and_padding_is_zero():
    x = _images(2000)
    out = random_crop_flip(x, 4, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8
    per_image_zero = (out == 0).flatten(1).any(1).float().mean()
    assert abs(per_image_zero - 80 / 81) < 0.01  # only the centred crop (4, 4) shows no padding
    # every non-zero value comes from the source image
    for i in range(20):
        assert set(out[i][out[i] > 0].unique().tolist()) <= set(x[i].unique().tolist())


def test_normalisation_is_per_pixel_mean_of_the_training_split():
    x = _images(100)
    mean = pixel_mean(x)
    assert mean.shape == (1, 3, 32, 32)
    assert torch.allclose(mean[0], x.float().mean(0) / 255)
    z = normalize(x, mean)
    assert torch.allclose(z.mean(0), torch.zeros(3, 32, 32), atol=1e-5)


def test_device_batches_cover_each_epoch_once_and_resume_exactly():
    n, b = 100, 32
    x = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 3, 32, 32).contiguous()
    y = torch.arange(n)
    db = DeviceBatches(x, y, b, torch.zeros(1, 3, 32, 32), "cpu", augment=False, seed=0)
    assert db.steps_per_epoch == 3
    seen = torch.cat([db.next()[1] for _ in range(3)])
    assert len(seen.unique()) == 96  # one epoch: no repeats, last partial batch dropped
    state = db.state_dict()
    a = [db.next()[1] for _ in range(5)]
    db2 = DeviceBatches(x, y, b, torch.zeros(1, 3, 32, 32), "cpu", augment=False, seed=123)
    db2.load_state_dict(state)
    assert all(torch.equal(p, q) for p, q in zip(a, [db2.next()[1] for _ in range(5)], strict=True))
    assert db2.epoch == db.epoch == 3


def test_augmented_batches_resume_exactly():
    x, y = _images(100), torch.arange(100)
    mean = pixel_mean(x)
    db = DeviceBatches(x, y, 32, mean, "cpu", augment=True, seed=0)
    for _ in range(4):
        db.next()
    state = db.state_dict()
    after = [db.next() for _ in range(4)]
    db2 = DeviceBatches(x, y, 32, mean, "cpu", augment=True, seed=999)
    db2.load_state_dict(state)
    for (xa, ya), (xb, yb) in zip(after, [db2.next() for _ in range(4)], strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
