"""Pure torch/numpy math. Nothing in this package imports ComfyUI."""
