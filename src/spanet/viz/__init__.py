"""Seeing what the model does: class activation maps (cam), figures (ranked lists, CAM grids, curves), report.html."""
