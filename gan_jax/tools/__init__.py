"""Things done with a trained generator: sampling to files, evaluating a checkpoint, and StyleGAN2's generation
tools (seed images with truncation, style mixing, interpolation, projection)."""
