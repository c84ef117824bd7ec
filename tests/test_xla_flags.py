"""segjax's default XLA flags: added to XLA_FLAGS by the command lines (not on import), never
overriding the user's."""

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


COMMAND = (
    "import os, jax.numpy as jnp; from segjax import cli; "
    "cli.run(lambda argv: print(os.environ.get('XLA_FLAGS', '<unset>')) or "
    "int(jnp.ones(2).sum()) - 2)"
)
IMPORT_ONLY = "import os, segjax, segjax.runs; print(os.environ.get('XLA_FLAGS', '<unset>'))"


def flags_seen(code: str, **env) -> str:
    """XLA_FLAGS as ``code`` sees it in a fresh process (a command computes with JAX first)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS",)}
    result = subprocess.run(
        [sys.executable, "-c", code], env={**environ, **env}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_a_command_sets_them_before_jax_starts_and_importing_segjax_does_not():
    assert flags_seen(COMMAND) == f"{YNN}="
    assert flags_seen(COMMAND, SEGJAX_XLA_DEFAULTS="0", XLA_FLAGS="") == ""
    assert flags_seen(IMPORT_ONLY) == "<unset>"  # a library leaves its importer's environment
