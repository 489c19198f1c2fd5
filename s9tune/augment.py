"""Augmentation and batch iterables.

Two paths with the same semantics (pad -> random 32x32 crop -> horizontal flip -> square
cutout filled with the dataset mean -> normalise), both driven by one knob, `aug_strength`:

* the albumentations pipeline: the reference, per image, in DataLoader workers (CPU runs);
* `TensorAugment`: whole batches as tensors on the training device (the fast path on CUDA,
  where per-image CPU work would starve the GPU).

`aug_strength` s in [0, 2] maps to: pad = round(4 s) pixels, flip probability = 0.5 min(s, 1),
cutout side = round(8 s) pixels (always applied when > 0). s = 0 is the identity, s = 1 is the
seed's pipeline exactly (pad 4 -> crop 32, flip, 8x8 cutout), s = 2 pads 8 and cuts 16x16.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from s9tune.config import TrainConfig
from s9tune.data import Splits

# CIFAR-10 training-set statistics (0-1 scale). Fixed constants, so a checkpoint evaluates the
# same whatever subset it was trained on.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class AugParams:
    pad: int
    flip_p: float
    cutout: int

    @classmethod
    def from_strength(cls, s: float) -> AugParams:
        return cls(pad=round(4 * s), flip_p=0.5 * min(s, 1.0), cutout=round(8 * s))


def epoch_seed(seed: int, epoch: int) -> int:
    """All randomness of an epoch derives from (seed, epoch): a resumed run replays it exactly."""
    return (seed * 1_000_003 + epoch * 7919 + 12345) % (2**31 - 1)


# -- albumentations (reference, CPU) --------------------------------------------------
def albumentations_pipeline(strength: float, pad_mode: str = "reflect", normalize: bool = True):
    # here, not at the top: albumentations costs ~0.55 s CPU at import after torch (it loads
    # SciPy; 2-core VM) and only the albumentations data path (CPU runs' default) and the
    # report's figure use it, while every run and every search trial imports this module
    import albumentations as A
    import cv2

    p = AugParams.from_strength(strength)
    mean255 = tuple(round(255.0 * m) for m in CIFAR10_MEAN)  # ints: CoarseDropout truncates floats
    border = cv2.BORDER_REFLECT_101 if pad_mode == "reflect" else cv2.BORDER_CONSTANT
    ops: list = []
    if p.pad > 0:
        # the constant border is the dataset mean, so padding adds no new colour
        ops.append(A.PadIfNeeded(32 + 2 * p.pad, 32 + 2 * p.pad, border_mode=border, fill=mean255))
        ops.append(A.RandomCrop(32, 32))
    if p.flip_p > 0:
        ops.append(A.HorizontalFlip(p=p.flip_p))
    if p.cutout > 0:
        ops.append(
            A.CoarseDropout(
                num_holes_range=(1, 1),
                hole_height_range=(p.cutout, p.cutout),
                hole_width_range=(p.cutout, p.cutout),
                fill=mean255,
                p=1.0,
            )
        )
    if normalize:
        ops.append(A.Normalize(mean=CIFAR10_MEAN, std=CIFAR10_STD, max_pixel_value=255.0))
    return A.Compose(ops)


class _AlbuDataset(torch.utils.data.Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray, strength: float, pad_mode: str) -> None:
        self.x, self.y = x, y
        self.transform = albumentations_pipeline(strength, pad_mode)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.transform(image=self.x[i])["image"]
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), int(self.y[i])


def seed_pipeline(transform, seed: int) -> None:
    """Seed an albumentations Compose so that its transforms draw independent streams.

    Compose.set_random_seed hands every child the same seed, so RandomCrop and HorizontalFlip
    would read identical random streams (the flip of one image repeating another's crop draw)."""
    transform.set_random_seed(seed)
    for i, t in enumerate(transform.transforms):
        t.set_random_seed(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))


def _seed_worker(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    seed_pipeline(info.dataset.transform, torch.initial_seed() % 2**32)


class Batches:
    """What every loader shares: how many images, in batches of what size, for which epoch, and
    the memory layout a batch takes on the GPU."""

    def __init__(self, num_samples: int, batch_size: int, device: torch.device) -> None:
        self.num_samples, self.batch_size, self.device, self.epoch = num_samples, batch_size, device, 0

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def on_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x


class AlbumentationsLoader(Batches):
    """Per-image albumentations in DataLoader workers; batches land on `device`."""

    def __init__(self, x: np.ndarray, y: np.ndarray, cfg: TrainConfig, device: torch.device) -> None:
        super().__init__(len(y), cfg.batch_size, device)
        self.dataset = _AlbuDataset(x, y, cfg.aug_strength, cfg.pad_mode)
        self.cfg = cfg

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        s = epoch_seed(self.cfg.seed, self.epoch)
        gen = torch.Generator().manual_seed(s)
        seed_pipeline(self.dataset.transform, s)  # used when num_workers == 0
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.cfg.batch_size,
            shuffle=True,
            generator=gen,
            num_workers=self.cfg.num_workers,
            worker_init_fn=_seed_worker if self.cfg.num_workers else None,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for xb, yb in loader:
            yield self.on_device(xb), yb.to(self.device, non_blocking=True)


# -- tensor path (fast, GPU) ----------------------------------------------------------
def writable(a: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Arrays from Ray's object store are read-only; torch wants memory it may write."""
    if isinstance(a, np.ndarray) and not a.flags.writeable:
        return a.copy()
    return a


def normalize_uint8(
    x: np.ndarray | torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """NHWC uint8 -> normalised NCHW float on `device`."""
    t = torch.as_tensor(writable(x)).to(device)
    t = t.permute(0, 3, 1, 2).to(dtype).div_(255.0)
    mean = torch.tensor(CIFAR10_MEAN, device=device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=device, dtype=dtype).view(1, 3, 1, 1)
    return ((t - mean) / std).contiguous()


class TensorAugment:
    """Batched crop / flip / cutout on normalised NCHW tensors (any device).

    Works on normalised data: crop and flip commute with normalisation, reflect padding too,
    and the dataset mean normalises to 0, so cutout fills with 0 (and the constant border of
    pad_mode=constant is 0 as well). Same offsets range, flip rate and hole size as the
    albumentations pipeline.
    """

    def __init__(self, strength: float, pad_mode: str = "reflect") -> None:
        self.p = AugParams.from_strength(strength)
        self.pad_mode = pad_mode

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device
        if self.p.pad > 0:
            pad = self.p.pad
            mode = "reflect" if self.pad_mode == "reflect" else "constant"
            xp = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode=mode)
            oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=dev)
            ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=dev)
            rows = (oy[:, None] + torch.arange(h, device=dev)).view(n, 1, h, 1)
            cols = (ox[:, None] + torch.arange(w, device=dev)).view(n, 1, 1, w)
            idx = torch.arange(n, device=dev).view(n, 1, 1, 1)
            ch = torch.arange(x.shape[1], device=dev).view(1, -1, 1, 1)
            x = xp[idx, ch, rows, cols]
        if self.p.flip_p > 0:
            flip = torch.rand(n, generator=gen, device=dev) < self.p.flip_p
            x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
        if self.p.cutout > 0:
            size = self.p.cutout
            cy = torch.randint(0, h - size + 1, (n,), generator=gen, device=dev).view(n, 1, 1)
            cx = torch.randint(0, w - size + 1, (n,), generator=gen, device=dev).view(n, 1, 1)
            ar_h = torch.arange(h, device=dev).view(1, h, 1)
            ar_w = torch.arange(w, device=dev).view(1, 1, w)
            hole = (ar_h >= cy) & (ar_h < cy + size) & (ar_w >= cx) & (ar_w < cx + size)
            x = x.masked_fill(hole.unsqueeze(1), 0.0)
        return x


class TensorLoader(Batches):
    """The whole split resident on `device` as uint8; each epoch shuffles, then normalises and
    augments batch by batch."""

    def __init__(self, x: np.ndarray, y: np.ndarray, cfg: TrainConfig, device: torch.device) -> None:
        super().__init__(len(y), cfg.batch_size, device)
        # resident as uint8 (a quarter of float32's memory, which matters with 4+ trials per GPU);
        # each batch is normalised after the gather
        self.x = torch.as_tensor(writable(x)).to(device)
        self.y = torch.as_tensor(writable(y), dtype=torch.long, device=device)
        self.aug = TensorAugment(cfg.aug_strength, cfg.pad_mode)
        self.cfg = cfg

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator(device=self.device).manual_seed(epoch_seed(self.cfg.seed, self.epoch))
        order = torch.randperm(len(self.y), generator=gen, device=self.device)
        bs = self.cfg.batch_size
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            yield self.on_device(self.aug(normalize_uint8(self.x[idx], self.device), gen)), self.y[idx]


class EvalBatches(Batches):
    """Normalised, un-augmented batches in a fixed order."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, device: torch.device) -> None:
        super().__init__(len(y), batch_size, device)
        self.x = normalize_uint8(x, device)
        self.y = torch.as_tensor(writable(y), dtype=torch.long, device=device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, self.num_samples, self.batch_size):
            yield self.on_device(self.x[start : start + self.batch_size]), self.y[start : start + self.batch_size]


@dataclass
class Loaders:
    train: AlbumentationsLoader | TensorLoader
    eval: EvalBatches  # validation split if there is one, else the test set
    eval_name: str  # "val" or "test"
    test: EvalBatches


def choose_data_path(cfg: TrainConfig, device: torch.device) -> str:
    if cfg.data_path != "auto":
        return cfg.data_path
    return "tensor" if device.type == "cuda" else "albumentations"


def make_loaders(cfg: TrainConfig, splits: Splits, device: torch.device) -> Loaders:
    path = choose_data_path(cfg, device)
    cls = TensorLoader if path == "tensor" else AlbumentationsLoader
    train = cls(splits.train_x, splits.train_y, cfg, device)
    test = EvalBatches(splits.test_x, splits.test_y, cfg.eval_batch_size, device)
    if splits.has_val:
        return Loaders(train, EvalBatches(splits.val_x, splits.val_y, cfg.eval_batch_size, device), "val", test)
    return Loaders(train, test, "test", test)
