"""PyTorch side: the model family, the SFT trainer, the torch losses and generation."""
