"""Backbones: Point Transformer V3 and the pieces it is made of (serialisation, sparse convolution, pooling)."""
