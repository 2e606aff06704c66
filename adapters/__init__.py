"""The only code that touches ComfyUI. ComfyUI is imported lazily, inside functions."""
