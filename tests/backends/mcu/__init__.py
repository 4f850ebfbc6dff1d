"""Microcontroller backend tests: kernels, memory planner, code generator, and the build/run toolchain."""
