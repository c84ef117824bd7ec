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


def train_step_call(config, num_classes: int, in_channels: int):
    """One smp training step (forward, loss, backward, clipping, AdamW) on a fixed batch, and its
    figures (as ``segjax.benchmark.train_step_call``'s)."""
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(config.seed)
    model = build(config, num_classes, in_channels).train()
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.optimizer.learning_rate,
        weight_decay=config.optimizer.weight_decay,
    )
    dice = smp.losses.DiceLoss("multiclass", from_logits=True)
    height, width = config.data.image_size
    images = torch.randn(config.batch_size, in_channels, height, width)
    labels = torch.randint(0, num_classes, (config.batch_size, height, width))

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        loss = torch.nn.functional.cross_entropy(logits, labels) + dice(logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optimizer.grad_clip_norm or 1e9)
        optimizer.step()

    return step, {"batch_size": config.batch_size, "image_size": (height, width)}


def forward_call(config, num_classes: int, in_channels: int, batch_size: int, image_size):
    """One smp forward pass in eval mode, and its figures."""
    import torch

    model = build(config, num_classes, in_channels).eval()
    images = torch.randn(batch_size, in_channels, *image_size)

    def forward():
        with torch.inference_mode():
            model(images)

    return forward, {"batch_size": batch_size, "image_size": tuple(image_size)}
