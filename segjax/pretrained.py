"""The weights a fresh run starts from: ``config.model.pretrained`` (segjax.models.weights).

Loaded once, after the random initialisation and before step 1; a resumed run takes its checkpoint
and never opens the file again (it may have moved). The file's sha256 is checked against
``model.pretrained_sha256`` when that is set, and recorded there for config.json.
"""

import os

import jax
import numpy as np

from segjax.errors import ConfigError
from segjax.models.weights import load_weights, read_state_dict, sha256
from segjax.models.weights.transfer import SEGJAX_FORMAT, load_segjax_weights


def load_pretrained(config, model, variables: dict) -> tuple[dict, str, str]:
    """(variables with the file's tensors in place, a one-line report, the file's sha256)."""
    path = config.model.pretrained
    if not os.path.isfile(path):
        raise ConfigError(f"model.pretrained={path!r}: no such file (from {os.getcwd()})")
    digest = sha256(path)
    pinned = config.model.pretrained_sha256.lower()
    if pinned and pinned != digest:
        raise ConfigError(
            f"model.pretrained={path!r} has sha256 {digest}, not model.pretrained_sha256="
            f"{pinned}: the file is not the one this config names"
        )
    tensors, metadata = read_state_dict(path)
    kind = config.model.pretrained_kind or None
    host = jax.tree.map(np.asarray, variables)
    if metadata.get("format") == SEGJAX_FORMAT:
        loaded, count = load_segjax_weights(host, tensors, path, kind or "model")
        report = f"loaded {count} tensors into the {kind or 'whole'} model from {path} (segjax)"
        return loaded, report, digest
    loaded, summary = load_weights(model, host, tensors, path, scope=kind)
    return loaded, summary.summary(), digest


def check_pretrained(config, model, abstract_variables: dict) -> None:
    """``load_pretrained`` against zeros of the model's shapes (``jax.eval_shape``: nothing
    initialised), so that a missing, unpinned or unreadable file, or one whose layout does not
    fill this model, is refused before a run takes its workdir."""
    zeros = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract_variables)
    load_pretrained(config, model, zeros)
