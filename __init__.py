"""ComfyUI-MMGT: co-speech gesture video generation (MMGT, IEEE TCSVT 2025) as a ComfyUI node pack."""

import os
import sys

_PACK_ROOT = os.path.dirname(os.path.abspath(__file__))
if _PACK_ROOT not in sys.path:
    # Appended, not prepended: ComfyUI's own top-level modules (e.g. its `nodes.py`) must keep precedence.
    sys.path.append(_PACK_ROOT)

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # Imported as a plain module, not as ComfyUI's custom-node package: pytest does this when the checkout's folder
    # name is not a Python identifier (e.g. ComfyUI-MMGT). There is no host to register nodes with then.
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
