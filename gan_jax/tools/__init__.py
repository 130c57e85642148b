"""Things done with a trained generator: sampling to files, evaluating a checkpoint."""
