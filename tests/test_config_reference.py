"""The config key table of the docs (``segjax.config_reference``): every key of the base config,
with its default, what validation allows and a meaning, so a key added without a comment in
segjax/defaults.py fails here rather than reaching the docs blank."""

from segjax import config_reference
from segjax.defaults import base_config
from segjax.validation import flatten


def test_every_key_has_a_default_a_rule_and_a_meaning():
    rows = config_reference.rows()
    assert [row[0] for row in rows] == sorted(flatten(base_config().to_dict()))
    no_meaning = [key for key, _, _, meaning in rows if not meaning]
    assert not no_meaning, f"add a comment in segjax/defaults.py for {no_meaning}"
    no_rule = [key for key, _, allowed, _ in rows if not allowed]
    assert no_rule == ["loss.options.lovasz_softmax"]  # a loss without options: nothing to set
    by_key = {key: (default, allowed, meaning) for key, default, allowed, meaning in rows}
    assert by_key["optimizer.learning_rate"] == (
        "0.001",
        "a number >= 0",
        "the peak rate, after warm-up",
    )
    assert "micro-batches per step" in by_key["accumulation_steps"][2]
    assert by_key["model.pyramid"][2].startswith("create_model option (archs: maskrcnn")
    table = config_reference.markdown()
    assert table.count("\n") == len(rows) + 2 and "| `seed` | `0` |" in table
