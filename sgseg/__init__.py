"""sgseg: segmentation-grounded scene graph generation."""
