"""Explaining a trained model: class-wise metrics, GradCAM, plots and the HTML/Markdown report."""

# GradCAM's default layer (analysis/cam.py says why), here so that the CLI can name it without
# importing torch
DEFAULT_TARGET_LAYER = "r2"
