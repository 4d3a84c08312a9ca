"""Benchmarks of the kernels and the crop job: tools run from a checkout, not part of the
installed package (``python -m jobs bench``; ``python benchmarks/codec.py``...)."""
