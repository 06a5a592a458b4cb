import os

# Tests run on the CPU with 4 virtual devices, so data-parallel code paths are exercised.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
