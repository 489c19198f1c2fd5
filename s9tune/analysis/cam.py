"""GradCAM for the S9 ResNet through pytorch-grad-cam (never re-implemented here).

Default target layer: `r2`, the residual block after layer3. It is the last module before the
4x4 max-pool and the linear classifier, so its 512 (8 x width) channels are the features the
decision is actually made from, and GradCAM's channel weights (spatially averaged gradients)
are close to the linear layer's weights for the explained class. The price is resolution: its
map is 4x4, upsampled to 32x32 (each cell covers an 8x8 patch of the image). `r1` (16x16) or
`layer2` (8x8) give sharper maps of less class-specific features; pass them by name.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from s9tune.analysis import DEFAULT_TARGET_LAYER
from s9tune.augment import CIFAR10_MEAN, CIFAR10_STD
from s9tune.errors import ConfigError

logger = logging.getLogger(__name__)


def layer_names(model: nn.Module) -> list[str]:
    """Every dotted submodule name GradCAM can hook (for error messages and --help)."""
    return [name for name, _ in model.named_modules() if name]


def resolve_target_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name` ("r2", "layer3", "r1.res2"); ConfigError if there is none."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"GradCAM target layer {name!r}: give a module name such as 'r2' or 'layer3'")
    try:
        return model.get_submodule(name.strip())
    except AttributeError:
        top = ", ".join(n for n, _ in model.named_children())
        raise ConfigError(
            f"GradCAM target layer {name!r}: the model has no such module "
            f"(top-level modules: {top}; nested ones are dotted, e.g. r2.res2)"
        ) from None


def prepare_cam_model(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """A deep copy of `model` that GradCAM may hook and put in eval mode.

    BaseCAM calls `model.eval()` and registers hooks, so it must never touch a model that is
    still being trained. In-place ReLUs are switched off in the copy: otherwise a target layer
    whose output is later overwritten in place (a BatchNorm followed by ReLU(inplace=True))
    would have its saved activation and gradient hook clobbered.
    """
    # a copy made under inference_mode would hold inference tensors, which autograd refuses
    with torch.inference_mode(False):
        cam_model = copy.deepcopy(model)
        if device is not None:
            cam_model = cam_model.to(device)
    cam_model.eval()
    for module in cam_model.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    for p in cam_model.parameters():
        p.requires_grad_(True)
    return cam_model


def compute_gradcam(
    cam_model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[int] | None = None,
    *,
    target_layer: str = DEFAULT_TARGET_LAYER,
    batch_size: int = 64,
) -> np.ndarray:
    """GradCAM maps of normalised NCHW `images` on a model from `prepare_cam_model`.

    `targets` are the classes to explain, one per image (None: each image's predicted class).
    Returns float32 (N, H, W) in [0, 1], each map min-max scaled by pytorch-grad-cam. The
    hooks are registered on entry and released on exit of the GradCAM context.
    """
    # grad-cam here, not at the top: ~2.4 s CPU at import after torch (it loads matplotlib, SciPy,
    # pandas, scikit-learn; 2-core VM), and `s9tune retrain` imports this module for
    # resolve_target_layer before its checks, long before a CAM is drawn
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = resolve_target_layer(cam_model, target_layer)
    if images.ndim != 4:
        raise ValueError(f"images must be NCHW, got shape {tuple(images.shape)}")
    n = images.shape[0]
    if targets is not None and len(targets) != n:
        raise ValueError(f"{len(targets)} targets for {n} images")
    if n == 0:
        return np.zeros((0, images.shape[2], images.shape[3]), dtype=np.float32)
    device = next(cam_model.parameters()).device
    logger.debug("GradCAM on %d images, layer %s, device %s", n, target_layer, device)
    maps: list[np.ndarray] = []
    # GradCAM needs autograd even if a caller sits inside inference_mode/no_grad; inference
    # tensors cannot be saved for backward, hence the clone.
    with torch.inference_mode(False), torch.enable_grad():
        with GradCAM(model=cam_model, target_layers=[layer]) as cam:
            try:
                for start in range(0, n, batch_size):
                    xb = images[start : start + batch_size].detach().to(device).clone().float()
                    tb = None
                    if targets is not None:
                        tb = [ClassifierOutputTarget(int(t)) for t in targets[start : start + batch_size]]
                    maps.append(np.asarray(cam(input_tensor=xb, targets=tb), dtype=np.float32))
            except ValueError as exc:
                # e.g. "fc": a layer without a spatial map has nothing to weight
                raise ConfigError(
                    f"GradCAM target layer {target_layer!r}: its output is not an (N, C, H, W) feature map ({exc})"
                ) from None
            except IndexError as exc:
                # BaseCAM.__exit__ swallows IndexError with a print; re-raise as something it lets through
                raise RuntimeError(f"GradCAM failed on layer {target_layer!r}: {exc}") from exc
        cam_model.zero_grad(set_to_none=True)
    return np.clip(np.concatenate(maps), 0.0, 1.0)


def gradcam_maps(
    model: nn.Module,
    images: torch.Tensor,
    targets: Sequence[int] | None = None,
    *,
    target_layer: str = DEFAULT_TARGET_LAYER,
    device: torch.device | str | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """GradCAM maps (N, H, W) in [0, 1] for `images`, computed on a throwaway copy of `model`."""
    resolve_target_layer(model, target_layer)  # fail before the deep copy
    cam_model = prepare_cam_model(model, device)
    return compute_gradcam(cam_model, images, targets, target_layer=target_layer, batch_size=batch_size)


def denormalize(images: torch.Tensor) -> np.ndarray:
    """Normalised NCHW tensors -> float32 NHWC RGB in [0, 1] (what show_cam_on_image needs)."""
    mean = torch.tensor(CIFAR10_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, dtype=torch.float32).view(1, 3, 1, 1)
    x = images.detach().float().cpu() * std + mean
    return x.clamp_(0.0, 1.0).permute(0, 2, 3, 1).contiguous().numpy()


def overlay_cams(images01: np.ndarray, maps: np.ndarray, image_weight: float = 0.5) -> np.ndarray:
    """Heatmaps blended onto images (float NHWC in [0, 1]) -> uint8 NHWC RGB."""
    from pytorch_grad_cam.utils.image import show_cam_on_image  # here, as in gradcam_maps

    if len(images01) != len(maps):
        raise ValueError(f"{len(images01)} images but {len(maps)} maps")
    out = [
        show_cam_on_image(
            np.asarray(img, dtype=np.float32), np.asarray(m, dtype=np.float32), use_rgb=True, image_weight=image_weight
        )
        for img, m in zip(images01, maps, strict=True)
    ]
    if not out:
        return np.zeros((0, *np.shape(images01)[1:3], 3), dtype=np.uint8)
    return np.stack(out)


__all__ = [
    "DEFAULT_TARGET_LAYER",
    "compute_gradcam",
    "denormalize",
    "gradcam_maps",
    "layer_names",
    "overlay_cams",
    "prepare_cam_model",
    "resolve_target_layer",
]
