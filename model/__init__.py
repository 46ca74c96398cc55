"""COPA model (DESIGN section 7): ViT-TPD, BERT-style text towers, the five losses; import from submodules.

Imports ``manifests`` and torch, torchvision (box operations), timm, transformers, tokenizers, safetensors, numpy,
pyarrow (the VQA answers table), Pillow, albumentations, webdataset and tqdm; never Ray, ``pipeline`` or ``jobs``:
the trainer reads only what the pipeline wrote (``tests/test_imports.py``).
"""

import manifests.offline  # noqa: F401  (before any dependency: keeps them off the network)
