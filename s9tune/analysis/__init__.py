"""Explaining a trained model: class-wise metrics, GradCAM, plots and the HTML/Markdown report."""
