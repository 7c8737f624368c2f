"""Run the MMGT command line from anywhere, e.g. from the ComfyUI root with ComfyUI's Python:

    python custom_nodes/ComfyUI-MMGT/mmgt_cli.py doctor --models models/mmgt
    python custom_nodes/ComfyUI-MMGT/mmgt_cli.py download --mode audio2video --models models/mmgt

Python puts this file's folder on ``sys.path``, so ``mmgt_core`` is found without installing the pack.
"""

import sys

from mmgt_core.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
