"""COPA model (DESIGN section 7): ViT-TPD, BERT-style text towers, the five losses; import from submodules."""
