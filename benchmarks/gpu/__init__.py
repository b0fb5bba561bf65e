"""The issue 8 benchmarks on a CUDA device with mixed precision, and a one-GPU DDP smoke check."""
