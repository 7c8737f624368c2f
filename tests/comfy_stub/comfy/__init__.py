"""Test stub of the ComfyUI ``comfy`` package (only what the pack uses)."""
