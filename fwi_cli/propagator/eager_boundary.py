"""Boundary-saving gradient for ``impl="eager"`` (pure PyTorch). Not built yet."""
