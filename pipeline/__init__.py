"""Source readers, caption-box alignment, patch labels, image handling and the shard writer (DESIGN section 3).

Imports ``manifests`` (the contract) and numpy, pyarrow, Pillow, OpenCV (the bilinear resize), ijson, PyYAML and
tqdm; never torch, Ray (the Ray Data adapter is ``jobs/pack.py``), ``model`` or ``jobs`` (``tests/test_imports.py``).
"""

import manifests.offline  # noqa: F401  (before any dependency: keeps them off the network)
