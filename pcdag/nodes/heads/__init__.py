"""Heads and losses of the training step: clustering heads, Sinkhorn-Knopp, matching, regularisers."""
