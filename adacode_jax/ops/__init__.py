"""CPU kernels XLA:CPU lacks, compiled on the machine that runs them and called as XLA FFI
custom calls inside the compiled program (no Python, no GIL): ``winograd`` holds the
F(2×2, 3×3) convolution, ``build`` finds a C++ compiler and caches the shared library."""
