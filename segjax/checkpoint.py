"""Checkpoints with orbax: the train state and the input pipeline's state, saved together.

Saves are asynchronous; a save interrupted by a crash leaves only a temporary directory, which
orbax ignores, so the latest complete checkpoint is always restorable. The last ``keep``
checkpoints are kept, plus the best one by ``best_metric`` among those saved with eval metrics.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as policies


class Checkpointer:
    def __init__(
        self,
        directory: str,
        keep: int = 2,
        best_metric: str | None = "miou",
        best_mode: str = "max",
        asynchronous: bool = True,
    ):
        preserve: list = [policies.LatestN(n=max(int(keep), 1))]
        if best_metric:
            preserve.append(
                policies.BestN(
                    get_metric_fn=lambda metrics: metrics[best_metric],
                    reverse=best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                preservation_policy=policies.AnyPreservationPolicy(preserve),
                enable_async_checkpointing=asynchronous,
                cleanup_tmp_directories=True,
            ),
            item_names=("state", "data"),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def save(self, step: int, state: Any, data_state: dict, metrics: dict | None = None) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)
            ),
            metrics=metrics,
            force=True,
        )

    def restore(self, step: int, like: Any) -> tuple[Any, dict]:
        """The state (with ``like``'s structure, dtypes and shardings) and data state at step."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()
            ),
        )
        return restored.state, restored.data

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
