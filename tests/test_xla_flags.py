"""segjax's default XLA flags: added to XLA_FLAGS on import, never overriding the user's."""

import os
import subprocess
import sys

from segjax import xla_flags

YNN = "--xla_cpu_experimental_ynn_fusion_type"


def test_defaults_are_appended_and_a_users_own_value_is_kept():
    assert xla_flags.with_defaults("") == f"{YNN}="
    assert xla_flags.with_defaults("--xla_force_host_platform_device_count=2") == (
        f"--xla_force_host_platform_device_count=2 {YNN}="
    )
    assert xla_flags.with_defaults(f"{YNN}=dot") == f"{YNN}=dot"


def flags_seen_by_jax(**env):
    """XLA_FLAGS in a fresh process after ``import segjax``, and whether JAX computes with them."""
    code = "import os, segjax, jax.numpy as jnp; jnp.ones(2).sum(); print(os.environ['XLA_FLAGS'])"
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",)}
    result = subprocess.run(
        [sys.executable, "-c", code], env={**environ, **env}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_import_sets_them_before_jax_starts_and_can_be_turned_off():
    assert flags_seen_by_jax() == f"{YNN}="
    assert flags_seen_by_jax(SEGJAX_XLA_DEFAULTS="0", XLA_FLAGS="") == ""
