"""What a run writes for people: ``metrics.jsonl``, TensorBoard events, a progress line."""

import json
import math
import os
import time


class MetricWriter:
    """One JSON object per logged step in ``workdir/metrics.jsonl``, the same scalars as
    TensorBoard events in ``workdir/tensorboard``. Only process 0 writes."""

    def __init__(self, workdir: str, enabled: bool = True, purge_step: int | None = None):
        """``purge_step``: a resumed run's first step; TensorBoard hides the events a stopped
        run logged from there on, as the resumed run logs those steps again."""
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tensorboard = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.tensorboard = SummaryWriter(
                os.path.join(workdir, "tensorboard"), purge_step=purge_step
            )

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled or not scalars:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in scalars.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for key, value in record.items():
            if key != "step" and isinstance(value, float) and math.isfinite(value):
                self.tensorboard.add_scalar(key, value, step)
        self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _plain(value):
    value = float(value)
    return value if math.isfinite(value) else str(value)


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class Progress:
    """Steps/s, images/s and ETA over the steps since the last report (None before any step
    has been timed, e.g. right after the compiling first step)."""

    def __init__(self, total_steps: int, batch_size: int, start_step: int):
        self.total, self.batch = total_steps, batch_size
        self.last_step, self.last_time = start_step, time.perf_counter()

    def report(self, step: int) -> dict[str, float] | None:
        now = time.perf_counter()
        if step <= self.last_step:
            return None
        steps_per_sec = (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = step, now
        return {
            "steps_per_sec": steps_per_sec,
            "img_per_sec": steps_per_sec * self.batch,
            "eta_sec": (self.total - step) / max(steps_per_sec, 1e-9),
        }


def describe_metrics(metrics: dict[str, float]) -> str:
    """The headline eval metrics in one line."""
    if "dsb_score" in metrics:
        return (
            f"DSB score {metrics['dsb_score']:.4f}  mask AP {metrics['mask_ap']:.4f}  AP50 "
            f"{metrics['mask_ap50']:.4f}  objects/image "
            f"{metrics['predicted_objects_per_image']:.1f} (true "
            f"{metrics['true_objects_per_image']:.1f})"
        )
    return (
        f"mIoU {metrics['miou']:.4f}  Dice {metrics['dice']:.4f}  pixel accuracy "
        f"{metrics['pixel_accuracy']:.4f}"
    )
