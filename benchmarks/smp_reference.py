"""The segmentation_models.pytorch equivalent of a segjax config, timed the same way.

Optional: needs ``pip install -e '.[bench]'`` (torch and segmentation-models-pytorch). GhostNet
encoders come from timm through smp's ``tu-`` prefix. Same architecture, encoder, classes, input
size, batch, optimizer (AdamW with the config's learning rate and weight decay) and loss
(cross-entropy + Dice); random weights (speed does not depend on them).
"""

from segjax.models.factory import DEFAULT_DECODER_CHANNELS

ENCODERS = {
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "ghostnet_100": "tu-ghostnet_100",
    "mobilenet_v2": "mobilenet_v2",
    # smp's EfficientNet-Lite0 pads like PyTorch (segjax's efficientnet_lite0_smp); the same
    # network and compute as efficientnet_lite0's TensorFlow padding, so the same speed.
    "efficientnet_lite0": "timm-tf_efficientnet_lite0",
    "efficientnet_lite0_smp": "timm-tf_efficientnet_lite0",
}
ARCHS = {"unet": "Unet", "unetpp": "UnetPlusPlus"}


def available() -> str | None:
    """None when torch and smp import, else the reason they don't."""
    try:
        import segmentation_models_pytorch  # noqa: F401
        import torch  # noqa: F401
    except ImportError as error:
        return f"{error} (pip install -e '.[bench]' for the segmentation_models.pytorch baseline)"
    return None


def unsupported(config) -> str | None:
    """Why this config has no smp equivalent, or None."""
    model = config.model
    if model.arch not in ARCHS:
        return f"smp has no {model.arch!r} (the paper models are segjax's own)"
    if model.encoder not in ENCODERS:
        return f"no smp encoder mapped for {model.encoder!r}"
    if model.decoder_block != "conv" or model.attention or model.deep_supervision:
        return "smp has no Ghost decoder blocks, attention options or deep supervision"
    return None


def build(config, num_classes: int, in_channels: int):
    import segmentation_models_pytorch as smp

    model = config.model
    # segjax's default decoder channels: the last encoder_depth of the factory's defaults.
    channels = tuple(model.decoder_channels) or DEFAULT_DECODER_CHANNELS[-model.encoder_depth :]
    return getattr(smp, ARCHS[model.arch])(
        encoder_name=ENCODERS[model.encoder],
        encoder_weights=None,
        encoder_depth=model.encoder_depth,
        decoder_channels=channels,
        in_channels=in_channels,
        classes=num_classes,
    )


# How smp's users run it: eager float32 (TF32 allowed where PyTorch allows it by default, in
# cuDNN's convolutions), AMP (bfloat16 autocast, channels_last) and torch.compile of the AMP model.
MODES = ("eager", "amp", "compile")


def _placed(config, num_classes: int, in_channels: int, mode: str, device: str):
    """The smp model on ``device``, channels_last for AMP and compile, and what to call."""
    import torch

    if mode not in MODES:
        raise ValueError(f"smp mode {mode!r}: choose one of {list(MODES)}")
    model = build(config, num_classes, in_channels).to(device)
    if mode != "eager":
        model = model.to(memory_format=torch.channels_last)
    return model, torch.compile(model) if mode == "compile" else model


def _autocast(mode: str, device: str):
    import contextlib

    import torch

    if mode == "eager":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


def _images(shape, mode: str, device: str):
    import torch

    images = torch.randn(*shape, device=device)
    return images.contiguous(memory_format=torch.channels_last) if mode != "eager" else images


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def train_step_call(
    config, num_classes: int, in_channels: int, mode: str = "eager", device: str = "cpu",
    steps: int = 1,
):  # fmt: skip
    """``steps`` smp training steps (forward, loss, backward, clipping, AdamW) on a fixed batch,
    then waited for, and their figures (as ``segjax.benchmark.train_step_call``'s)."""
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(config.seed)
    model, forward = _placed(config, num_classes, in_channels, mode, device)
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.optimizer.learning_rate,
        weight_decay=config.optimizer.weight_decay,
    )
    dice = smp.losses.DiceLoss("multiclass", from_logits=True)
    height, width = config.data.image_size
    images = _images((config.batch_size, in_channels, height, width), mode, device)
    labels = torch.randint(0, num_classes, (config.batch_size, height, width), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with _autocast(mode, device):
            logits = forward(images)
            loss = torch.nn.functional.cross_entropy(logits, labels) + dice(logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optimizer.grad_clip_norm or 1e9)
        optimizer.step()

    def call():
        for _ in range(steps):
            step()
        synchronize(device)

    figures = {"batch_size": config.batch_size, "image_size": (height, width)}
    return call, {**figures, "steps_per_call": steps}


def forward_call(
    config, num_classes: int, in_channels: int, batch_size: int, image_size, mode: str = "eager",
    device: str = "cpu", steps: int = 1,
):  # fmt: skip
    """``steps`` smp forward passes in eval mode, then waited for, and their figures."""
    import torch

    model, forward = _placed(config, num_classes, in_channels, mode, device)
    model.eval()
    images = _images((batch_size, in_channels, *image_size), mode, device)

    def call():
        with torch.inference_mode(), _autocast(mode, device):
            for _ in range(steps):
                forward(images)
        synchronize(device)

    figures = {"batch_size": batch_size, "image_size": tuple(image_size)}
    return call, {**figures, "steps_per_call": steps}


def forward_flops(config, num_classes: int, in_channels: int, image_size) -> int:
    """FLOPs of one smp forward pass of one image, by PyTorch's own count (2 per
    multiply-accumulate), on the CPU: smp's networks are not always segjax's (GhostNet)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = build(config, num_classes, in_channels).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, in_channels, *image_size))
    return int(counter.get_total_flops())
