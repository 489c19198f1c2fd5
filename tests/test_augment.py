"""The two augmentation paths (albumentations reference, batched TensorAugment) and the loaders.

Offsets, flips and holes are read back from a "coordinate image": red = row + 10, green =
column + 10, blue = 255 on every original pixel. Anything with another blue value is fill
(padding in constant mode, or the cutout hole), whose colour is the dataset mean. The tensor
path is run on the normalised image and mapped back to uint8, so the very same decoder
checks both paths and the comparison between them is direct.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from s9tune.augment import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    AlbumentationsLoader,
    AugParams,
    TensorAugment,
    TensorLoader,
    albumentations_pipeline,
    normalize_uint8,
)
from s9tune.config import TrainConfig
from s9tune.errors import ConfigError

CPU = torch.device("cpu")
SIZE = 32
CODE0 = 10  # coordinate codes start here, well away from the fill colour (125, 123, 114)
DRAWS = 2000
FILL255 = tuple(round(255 * m) for m in CIFAR10_MEAN)  # (125, 123, 114)
PATHS = ("albumentations", "tensor")


def near_fill(pixels: np.ndarray) -> bool:
    """Within one uint8 level of the rounded mean (the tensor path fills in normalised float space)."""
    return len(pixels) > 0 and int(np.abs(pixels.astype(np.int64) - np.array(FILL255)).max()) <= 1


# -- helpers ---------------------------------------------------------------------------
def coord_image() -> np.ndarray:
    img = np.empty((SIZE, SIZE, 3), np.uint8)
    img[..., 0] = np.arange(SIZE)[:, None] + CODE0
    img[..., 1] = np.arange(SIZE)[None, :] + CODE0
    img[..., 2] = 255
    return img


def denormalize_to_uint8(x: torch.Tensor) -> np.ndarray:
    """Normalised NCHW float -> NHWC uint8: inverts normalize_uint8 (exact for integer inputs)."""
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    u = ((x * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return u.permute(0, 2, 3, 1).contiguous().numpy()


def run_albumentations(img: np.ndarray, strength: float, pad_mode: str, n: int, seed: int = 0) -> np.ndarray:
    pipe = albumentations_pipeline(strength, pad_mode, normalize=False)
    pipe.set_random_seed(seed)
    return np.stack([pipe(image=img)["image"] for _ in range(n)])


def run_tensor(img: np.ndarray, strength: float, pad_mode: str, n: int, seed: int = 0) -> np.ndarray:
    x = normalize_uint8(np.repeat(img[None], n, axis=0), CPU)
    out = TensorAugment(strength, pad_mode)(x, torch.Generator().manual_seed(seed))
    assert out.shape == x.shape and out.dtype == torch.float32
    return denormalize_to_uint8(out)


def run_path(path: str, img: np.ndarray, strength: float, pad_mode: str, n: int, seed: int = 0) -> np.ndarray:
    fn = run_albumentations if path == "albumentations" else run_tensor
    return fn(img, strength, pad_mode, n, seed)


def reflect101(q: np.ndarray) -> np.ndarray:
    """Index map of cv2.BORDER_REFLECT_101 / torch 'reflect' (the edge pixel is not repeated)."""
    q = np.abs(q)
    return np.where(q > SIZE - 1, 2 * (SIZE - 1) - q, q)


def border_codes(shift: np.ndarray, pad_mode: str) -> np.ndarray:
    """Source index of each output position for a crop starting at padded index `shift`; -1 = fill."""
    q = shift[:, None] + np.arange(SIZE)[None, :]
    return reflect101(q) if pad_mode == "reflect" else np.where((q >= 0) & (q < SIZE), q, -1)


@dataclass
class Decoded:
    oy: np.ndarray  # (N,) crop offset in the padded image, 0 .. 2*pad
    ox: np.ndarray
    flipped: np.ndarray  # (N,) bool
    hole: np.ndarray  # (N, 32, 32) bool: fill pixels where an original pixel was expected
    fill_pixels: np.ndarray  # (M, 3) colours of every non-original pixel (padding and hole)


def decode(out: np.ndarray, pad: int, pad_mode: str) -> Decoded:
    """Recover crop offset, flip and hole of each augmented coordinate image.

    For every candidate offset (and flip) the expected row / column codes are known; the true
    candidate matches every column (row) the hole does not touch, and no wrong candidate can
    match any column, so the decoding is unique or the test fails.
    """
    n = len(out)
    orig = out[..., 2] == 255
    rc = np.where(orig, out[..., 0].astype(np.int64) - CODE0, -1)  # (N, H, W)
    cc = np.where(orig, out[..., 1].astype(np.int64) - CODE0, -1)
    shifts = np.arange(2 * pad + 1) - pad
    e_rows = border_codes(shifts, pad_mode)  # (A, H)
    e_cols = np.concatenate([e_rows, e_rows[:, ::-1]])  # (2A, W): unflipped, then flipped
    row_hits = (rc[:, None, :, :] == e_rows[None, :, :, None]).all(axis=2).sum(axis=2)  # (N, A)
    col_hits = (cc[:, None, :, :] == e_cols[None, :, None, :]).all(axis=3).sum(axis=2)  # (N, 2A)
    for hits in (row_hits, col_hits):
        assert ((hits > 0).sum(axis=1) == 1).all(), "crop/flip not decodable: not a rigid shifted copy"
    a, c = row_hits.argmax(axis=1), col_hits.argmax(axis=1)
    exp_r, exp_c = e_rows[a], e_cols[c]  # (N, H), (N, W)
    exp_orig = (exp_r[:, :, None] >= 0) & (exp_c[:, None, :] >= 0)
    # where both are original pixels they must be exactly the expected source pixel
    both = orig & exp_orig
    assert (rc[both] == np.broadcast_to(exp_r[:, :, None], rc.shape)[both]).all()
    assert (cc[both] == np.broadcast_to(exp_c[:, None, :], cc.shape)[both]).all()
    assert not (orig & ~exp_orig).any(), "original pixels where padding was expected"
    n_off = 2 * pad + 1
    return Decoded(
        oy=a,
        ox=c % n_off,
        flipped=c >= n_off,
        hole=exp_orig & ~orig,
        fill_pixels=out[~orig].reshape(-1, 3) if n else np.empty((0, 3), np.uint8),
    )


def hole_boxes(hole: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """(top, left, height, width, pixel count) of the hole in each image."""
    boxes = []
    for m in hole:
        ys, xs = np.nonzero(m)
        if len(ys) == 0:
            boxes.append((-1, -1, 0, 0, 0))
            continue
        boxes.append((ys.min(), xs.min(), ys.max() - ys.min() + 1, xs.max() - xs.min() + 1, len(ys)))
    return boxes


def binomial_ok(hits: int, n: int, p: float, sigmas: float = 4.5) -> bool:
    return abs(hits - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


# -- the strength knob ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("strength", "pad", "flip_p", "cutout"),
    [(0.0, 0, 0.0, 0), (0.5, 2, 0.25, 4), (1.0, 4, 0.5, 8), (1.5, 6, 0.5, 12), (2.0, 8, 0.5, 16)],
)
def test_strength_maps_to_params(strength: float, pad: int, flip_p: float, cutout: int) -> None:
    assert AugParams.from_strength(strength) == AugParams(pad=pad, flip_p=flip_p, cutout=cutout)


@pytest.mark.parametrize("bad", [-0.1, 2.01, 3.0, float("nan"), float("inf")])
def test_invalid_strength_rejected(bad: float) -> None:
    with pytest.raises(ConfigError, match="aug_strength"):
        TrainConfig(aug_strength=bad)


@pytest.mark.parametrize("bad", ["strong", True, None])
def test_strength_of_wrong_type_rejected(bad: object) -> None:
    with pytest.raises(ConfigError, match="aug_strength"):
        TrainConfig().with_overrides({"aug_strength": bad})


def test_unknown_pad_mode_rejected() -> None:
    with pytest.raises(ConfigError, match="pad_mode"):
        TrainConfig(pad_mode="wrap")


# -- strength 0 is the identity -----------------------------------------------------------
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_strength_zero_is_identity_albumentations(pad_mode: str) -> None:
    rng = np.random.default_rng(0)
    pipe = albumentations_pipeline(0.0, pad_mode, normalize=False)
    for _ in range(20):
        img = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        out = pipe(image=img)["image"]
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_strength_zero_is_identity_tensor(pad_mode: str) -> None:
    x = torch.randn(16, 3, SIZE, SIZE)
    before = x.clone()
    out = TensorAugment(0.0, pad_mode)(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, before)
    assert torch.equal(x, before)  # and the input is not modified in place


def test_decoder_round_trip_is_exact() -> None:
    """The uint8 -> normalised -> uint8 mapping the tensor-path checks rely on loses nothing."""
    img = coord_image()
    back = denormalize_to_uint8(normalize_uint8(img[None], CPU))
    np.testing.assert_array_equal(back[0], img)
    d = decode(back, pad=4, pad_mode="constant")
    assert d.oy[0] == 4 and d.ox[0] == 4 and not d.flipped[0] and not d.hole.any()


# -- strength 1: crop, flip, cutout ---------------------------------------------------------
@pytest.fixture(scope="module")
def draws() -> dict[tuple[str, str, float], tuple[np.ndarray, Decoded]]:
    """DRAWS augmented coordinate images per (path, pad_mode, strength), decoded once."""
    img = coord_image()
    out: dict[tuple[str, str, float], tuple[np.ndarray, Decoded]] = {}
    for path in PATHS:
        for pad_mode in ("reflect", "constant"):
            for strength in (1.0, 2.0):
                n = DRAWS if strength == 1.0 else DRAWS // 4
                imgs = run_path(path, img, strength, pad_mode, n, seed=7)
                out[(path, pad_mode, strength)] = (imgs, decode(imgs, AugParams.from_strength(strength).pad, pad_mode))
    return out


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_crop_offsets_cover_range(draws, path: str, pad_mode: str) -> None:
    imgs, d = draws[(path, pad_mode, 1.0)]
    assert imgs.shape == (DRAWS, SIZE, SIZE, 3)
    for off in (d.oy, d.ox):
        assert off.min() == 0 and off.max() == 8
        counts = np.bincount(off, minlength=9)
        assert (counts > 0).all(), counts
        # uniform over the 9 offsets: each within +-40% of DRAWS/9 (about 6 sigma)
        assert (np.abs(counts - DRAWS / 9) < 0.4 * DRAWS / 9).all(), counts


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_flip_rate_is_half(draws, path: str, pad_mode: str) -> None:
    _, d = draws[(path, pad_mode, 1.0)]
    assert binomial_ok(int(d.flipped.sum()), DRAWS, 0.5), d.flipped.mean()


@pytest.mark.parametrize("path", PATHS)
def test_one_full_cutout_hole_filled_with_mean(draws, path: str) -> None:
    # reflect padding copies original pixels, so every fill pixel belongs to the hole
    imgs, d = draws[(path, "reflect", 1.0)]
    boxes = hole_boxes(d.hole)
    assert all(b[2:] == (8, 8, 64) for b in boxes), "every image has exactly one whole 8x8 hole"
    tops = np.array([b[0] for b in boxes])
    lefts = np.array([b[1] for b in boxes])
    for edge in (tops, lefts):
        assert edge.min() == 0 and edge.max() == SIZE - 8  # fully inside, and reaches both borders
        assert (np.bincount(edge, minlength=SIZE - 7) > 0).all()
    assert near_fill(imgs[d.hole])
    assert len(d.fill_pixels) == DRAWS * 64


@pytest.mark.parametrize("path", PATHS)
def test_constant_border_is_dataset_mean(draws, path: str) -> None:
    imgs, d = draws[(path, "constant", 1.0)]
    # the padding (fill where the crop leaves the image) is exactly the mean; judged on images
    # whose whole hole lies on original pixels, so no hole pixel is mistaken for padding
    clear = d.hole.sum(axis=(1, 2)) == 64
    padding = ((imgs[..., 2] != 255) & ~d.hole)[clear]
    assert padding.any() and (imgs[clear][padding] == FILL255).all()
    assert near_fill(d.fill_pixels)
    # padding appears exactly where the crop leaves the image: offset 0 -> 4 fill rows on top
    top_rows_fill = (imgs[:, :4, :, 2] != 255).all(axis=(1, 2))
    assert (top_rows_fill[d.oy == 0]).all()
    # the hole is never larger than 8x8 (it may overlap the padding, which hides part of it)
    for _top, _left, h, w, count in hole_boxes(d.hole):
        assert h <= 8 and w <= 8 and count <= 64


@pytest.mark.parametrize("path", PATHS)
def test_reflect_border_copies_image(draws, path: str) -> None:
    """pad_mode=reflect adds no fill colour: outside the hole every pixel is an original one."""
    imgs, d = draws[(path, "reflect", 1.0)]
    non_orig = imgs[..., 2] != 255
    np.testing.assert_array_equal(non_orig, d.hole)
    # a crop at offset 0 shows the reflected rows 4, 3, 2, 1 above row 0 (edge not repeated)
    sel = (d.oy == 0) & ~d.hole[:, :5, :].any(axis=(1, 2))
    assert sel.any()
    np.testing.assert_array_equal(imgs[sel][:, :5, 0, 0].astype(int) - CODE0, np.tile([4, 3, 2, 1, 0], (sel.sum(), 1)))


def test_paths_agree(draws) -> None:
    """Same offset range and distribution, flip rate, hole size and fill on both paths."""
    for pad_mode in ("reflect", "constant"):
        (_ia, a), (_it, t) = draws[("albumentations", pad_mode, 1.0)], draws[("tensor", pad_mode, 1.0)]
        for name in ("oy", "ox"):
            assert set(getattr(a, name)) == set(getattr(t, name)) == set(range(9))
            # two-sample check on the mean offset (uniform 0..8: sd 2.58, so se ~0.08 per path)
            assert abs(getattr(a, name).mean() - getattr(t, name).mean()) < 0.5
        assert abs(a.flipped.mean() - t.flipped.mean()) < 0.1
        assert near_fill(a.fill_pixels) and near_fill(t.fill_pixels)  # exact: test_fill_is_rounded_mean
    ba, bt = (
        hole_boxes(draws[("albumentations", "reflect", 1.0)][1].hole),
        hole_boxes(draws[("tensor", "reflect", 1.0)][1].hole),
    )
    assert {b[2:] for b in ba} == {b[2:] for b in bt} == {(8, 8, 64)}


@pytest.mark.parametrize("path", PATHS)
def test_strength_two_pads_8_and_cuts_16(draws, path: str) -> None:
    imgs, d = draws[(path, "reflect", 2.0)]
    assert imgs.shape[1:] == (SIZE, SIZE, 3)
    for off in (d.oy, d.ox):
        assert set(off) == set(range(17))
    assert all(b[2:] == (16, 16, 256) for b in hole_boxes(d.hole))
    assert near_fill(imgs[d.hole])
    assert binomial_ok(int(d.flipped.sum()), len(d.flipped), 0.5)
    _, dc = draws[(path, "constant", 2.0)]
    assert set(dc.oy) == set(range(17)) and near_fill(dc.fill_pixels)


@pytest.mark.parametrize("path", ["albumentations", "tensor"])
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
@pytest.mark.parametrize("strength", [1.0, 2.0])
def test_fill_is_rounded_mean(draws, path: str, pad_mode: str, strength: float) -> None:
    """Hole and constant border: one colour, round(255 * CIFAR10_MEAN), on both paths."""
    _, d = draws[(path, pad_mode, strength)]
    assert len(d.fill_pixels) > 0
    np.testing.assert_array_equal(np.unique(d.fill_pixels, axis=0), np.array([FILL255], np.uint8))


@pytest.mark.parametrize("path", PATHS)
def test_flip_rate_follows_strength(path: str) -> None:
    n = 1200
    d = decode(run_path(path, coord_image(), 0.5, "reflect", n, seed=3), pad=2, pad_mode="reflect")
    assert binomial_ok(int(d.flipped.sum()), n, 0.25), d.flipped.mean()
    assert set(d.oy) == set(range(5))
    assert all(b[2:] == (4, 4, 16) for b in hole_boxes(d.hole))


# albumentations' Compose.set_random_seed gives every child the same seed; augment.seed_pipeline
# must give RandomCrop and HorizontalFlip independent streams.
@pytest.mark.parametrize("kind", ["albumentations", "tensor"])
def test_loader_draws_are_independent(kind: str) -> None:
    """Flip decisions must not be predictable from crop draws within one seeded epoch."""
    n = DRAWS
    x = np.repeat(coord_image()[None], n, axis=0)
    cfg = TrainConfig(width=8, batch_size=n, device="cpu", seed=11, aug_strength=1.0, pad_mode="constant")
    loader = LOADERS[kind](x, np.arange(n, dtype=np.int64), cfg, CPU)
    ((xb, _),) = collect(loader, 0)  # one batch, in the order the images were augmented
    d = decode(denormalize_to_uint8(xb), pad=4, pad_mode="constant")
    assert binomial_ok(int(d.flipped.sum()), n, 0.5)
    # RandomCrop maps u in [0, 1) to offset floor(9 u); HorizontalFlip flips when u < 0.5.
    # With shared streams flip[2k] == (oy[k] <= 4) about 94% of the time; independent: 50%.
    agree = np.mean(d.flipped[0:n:2] == (d.oy[: n // 2] <= 4))
    assert abs(agree - 0.5) < 0.08, agree


def test_seeded_pipeline_is_reproducible() -> None:
    img = coord_image()
    a = run_albumentations(img, 1.0, "reflect", 50, seed=5)
    b = run_albumentations(img, 1.0, "reflect", 50, seed=5)
    c = run_albumentations(img, 1.0, "reflect", 50, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    ta, tb = run_tensor(img, 1.0, "reflect", 50, seed=5), run_tensor(img, 1.0, "reflect", 50, seed=5)
    np.testing.assert_array_equal(ta, tb)


def test_tensor_augment_keeps_device_dtype_and_does_not_mutate() -> None:
    x = torch.randn(8, 3, SIZE, SIZE)
    before = x.clone()
    out = TensorAugment(1.0, "reflect")(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.equal(x, before)


# -- loaders -------------------------------------------------------------------------------
N_IMAGES = 200  # 3 full batches of 64 and one of 8
LOADERS = {"tensor": TensorLoader, "albumentations": AlbumentationsLoader}


def solid_images(n: int) -> np.ndarray:
    """Image i is one solid colour unique to i, so crop/flip/reflect keep it identifiable."""
    i = np.arange(n)
    colours = np.stack([i % 256, (37 * i + 11) % 256, (101 * i + 7) % 256], axis=1).astype(np.uint8)
    assert len(np.unique(colours, axis=0)) == n
    return np.broadcast_to(colours[:, None, None, :], (n, SIZE, SIZE, 3)).copy()


def make_loader(kind: str, x: np.ndarray, strength: float, seed: int = 3, pad_mode: str = "reflect"):
    cfg = TrainConfig(width=8, batch_size=64, device="cpu", seed=seed, aug_strength=strength, pad_mode=pad_mode)
    # labels are the image indices, so a label names exactly one source image
    return LOADERS[kind](x, np.arange(len(x), dtype=np.int64), cfg, CPU)


def collect(loader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


@pytest.mark.parametrize("kind", LOADERS)
def test_loader_shapes_and_epoch_coverage(kind: str) -> None:
    x = solid_images(N_IMAGES)
    loader = make_loader(kind, x, 1.0)
    batches = collect(loader, 0)
    assert len(loader) == len(batches) == 4 and loader.num_samples == N_IMAGES
    for i, (xb, yb) in enumerate(batches):
        n = 64 if i < 3 else N_IMAGES - 3 * 64
        assert xb.shape == (n, 3, SIZE, SIZE) and xb.dtype == torch.float32
        assert yb.shape == (n,) and yb.dtype == torch.int64
    labels = torch.cat([yb for _, yb in batches])
    assert sorted(labels.tolist()) == list(range(N_IMAGES))  # every image once per epoch
    assert labels.tolist() != list(range(N_IMAGES))  # and shuffled


@pytest.mark.parametrize("kind", LOADERS)
def test_loader_strength_zero_returns_normalised_source(kind: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (N_IMAGES, SIZE, SIZE, 3), dtype=np.uint8)
    ref = normalize_uint8(x, CPU)
    for xb, yb in collect(make_loader(kind, x, 0.0), 0):
        # albumentations normalises in its own float order: equal to float32 rounding
        torch.testing.assert_close(xb, ref[yb], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", LOADERS)
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_loader_labels_follow_images_under_augmentation(kind: str, pad_mode: str) -> None:
    x = solid_images(N_IMAGES)
    ref_colour = normalize_uint8(x[:, :1, :1, :], CPU)[:, :, 0, 0]  # (N, 3)
    for xb, yb in collect(make_loader(kind, x, 1.0, pad_mode=pad_mode), 2):
        # cutout and constant padding cover at most 64 + 4*32*2 of 1024 pixels: the median
        # pixel is still the source colour
        med = xb.flatten(2).median(dim=2).values
        torch.testing.assert_close(med, ref_colour[yb], rtol=0, atol=1e-5)
        # and the augmentation did something: at least the hole is the mean, 0 after
        # normalising (to within one uint8 level on the albumentations path)
        assert (xb.abs() < 0.02).all(dim=1).flatten(1).sum(dim=1).min() >= 64


@pytest.mark.parametrize("kind", LOADERS)
def test_loader_same_seed_and_epoch_replays(kind: str) -> None:
    x = solid_images(N_IMAGES)
    x = (
        (x.astype(np.int64) + np.arange(SIZE)[None, :, None, None]).clip(0, 255).astype(np.uint8)
    )  # give crops/flips something to show
    first = collect(make_loader(kind, x, 1.0, seed=5), 1)
    again_same_loader = make_loader(kind, x, 1.0, seed=5)
    collect(again_same_loader, 0)  # iterating another epoch first must not matter
    replay = collect(again_same_loader, 1)
    for (xa, ya), (xb, yb) in zip(first, replay, strict=True):
        assert torch.equal(ya, yb)
        assert torch.equal(xa, xb)
    order = lambda bs: torch.cat([y for _, y in bs]).tolist()  # noqa: E731
    other_epoch = collect(make_loader(kind, x, 1.0, seed=5), 2)
    other_seed = collect(make_loader(kind, x, 1.0, seed=6), 1)
    assert order(other_epoch) != order(first)
    assert order(other_seed) != order(first)


# -- real images ---------------------------------------------------------------------------
@pytest.mark.realdata
def test_real_images_paths_agree(mini) -> None:
    from s9tune.data import load_splits

    splits = load_splits(mini, val_size=0.0, seed=0, download=False)
    x = splits.train_x
    assert x.shape == (4068, SIZE, SIZE, 3)
    # the fixed mean/std are the full training set's; the real slice must be close to them,
    # or "fill with the dataset mean" would be a visible colour
    np.testing.assert_allclose(np.array(splits.mean()) / 255, CIFAR10_MEAN, atol=0.02)
    np.testing.assert_allclose(np.array(splits.std()) / 255, CIFAR10_STD, atol=0.02)
    ref = normalize_uint8(x[:256], CPU)
    pipe = albumentations_pipeline(0.0, "reflect", normalize=True)
    albu = torch.from_numpy(np.stack([pipe(image=im)["image"].transpose(2, 0, 1) for im in x[:256]]))
    torch.testing.assert_close(albu, ref, rtol=0, atol=1e-5)
    # strength 1 on real images: shape kept, and about 64 pixels per image are the mean
    out = TensorAugment(1.0, "reflect")(ref, torch.Generator().manual_seed(0))
    assert out.shape == ref.shape
    assert ((out.abs() < 1e-6).all(dim=1).flatten(1).sum(dim=1) >= 64).all()
