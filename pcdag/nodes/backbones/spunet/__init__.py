"""The sparse-convolution U-Net's private modules: configuration, model, Pointcept names, memory model."""
