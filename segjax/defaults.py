"""The base config every experiment starts from, and the shared variants.

Config files in ``configs/`` call ``base_config(variant)`` and set the model; a variant is the part
after the colon in ``--config configs/<file>.py:<variant>``:
- ``smoke``: a few steps on the tiny synthetic dataset at 32x32, for tests;
- ``small``: the tiny synthetic dataset (96/20/23 images of 64x64);
- ``dsb2018``: the DSB 2018 nuclei folder (``data.path``), binary masks, microscopy flips.
"""

import ml_collections

from segjax.data.folder import DEFAULT_FRACTIONS
from segjax.losses import LOSSES, loss_options
from segjax.model_config import model_defaults

VARIANTS = ("smoke", "small", "dsb2018")


def base_config(variant: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # initialisation, data order and augmentation: one seed, one run
    config.total_steps = 2000  # optimizer steps of the whole run (a resumed run counts on)
    config.batch_size = 8  # global, over all processes
    config.accumulation_steps = 1  # micro-batches per step (gradient accumulation)
    config.log_every_steps = 100  # a metrics.jsonl record and a progress line every N steps
    config.eval_every_steps = 500  # validation (eval_split) every N steps, and at the end
    config.checkpoint_every_steps = 500  # a checkpoint every N steps (and at every evaluation)
    config.keep_checkpoints = 2  # the last ones; the best by best_metric is kept as well
    config.best_metric = "miou"  # the eval metric that picks the best checkpoint
    config.eval_split = "validation"  # the split evaluated during training
    config.deep_supervision_mode = "accurate"  # or 'fast': the last head only

    # Every create_model option of every arch, with the factory's defaults (segjax/model_config.py).
    config.model = model = ml_collections.ConfigDict(model_defaults())
    model.arch = "unet"  # unet, unetpp, unet_paper, unetpp_paper
    model.encoder = "resnet34"  # '' for the paper models
    # model.dtype: float32 or bfloat16 (parameters stay float32); decoder_channels: () = the
    # default for the depth; attention: '' or scse; unetpp: deep_supervision, prune_level
    # (0 = full); paper models: filters, dropout, norm ('' or batch).
    # Pretrained weights (docs/weights.md): a torchvision / timm ImageNet file fills
    # the encoder, an smp Unet / UnetPlusPlus file the whole model; loaded once, before step 1
    # (a resumed run takes its checkpoint). pretrained_kind: '' (from the file's keys),
    # 'encoder' or 'model'. pretrained_sha256: '' or the file's digest, checked when given and
    # recorded in config.json by the run that loads it.
    model.pretrained = ""
    model.pretrained_kind = ""
    model.pretrained_sha256 = ""

    config.optimizer = opt = ml_collections.ConfigDict()
    opt.name = "adamw"  # or sgd
    opt.learning_rate = 1e-3  # the peak rate, after warm-up
    opt.warmup_steps = 100  # linear warm-up from 0
    opt.schedule = "cosine"  # cosine, polynomial, constant
    opt.end_lr_factor = 0.01  # the schedule ends at learning_rate x this
    opt.power = 1.0  # polynomial schedule
    opt.weight_decay = 1e-4  # decoupled (AdamW) or L2 (sgd)
    opt.b1, opt.b2 = 0.9, 0.999  # Adam's moment decay rates
    opt.momentum, opt.nesterov = 0.9, False  # sgd
    opt.grad_clip_norm = 1.0  # 0 = no clipping
    # Fine-tuning a pretrained encoder: its learning rate is learning_rate x encoder_lr_factor,
    # and it does not move in the first freeze_encoder_steps steps (model.freeze_encoder_bn
    # keeps its BatchNorm statistics as loaded).
    opt.encoder_lr_factor = 1.0
    opt.freeze_encoder_steps = 0  # the encoder stays fixed for the first N steps

    # Every loss has a weight (0 = off) and its options, so any can be switched on from the
    # command line: --config.loss.weights.focal=1 --config.loss.options.focal.gamma=2.
    config.loss = ml_collections.ConfigDict()
    config.loss.weights = ml_collections.ConfigDict({name: 0.0 for name in LOSSES})
    config.loss.weights.cross_entropy = 1.0
    config.loss.weights.dice = 1.0
    config.loss.options = ml_collections.ConfigDict(loss_options())

    config.data = data = ml_collections.ConfigDict()
    data.name = "segjax_shapes"  # segjax_shapes[/config], folder, or a name in segjax.data.STANDARD
    data.path = ""  # root of images/ and masks/ for name='folder'
    data.data_dir = ""  # TFDS data dir; '' = TFDS's default (~/tensorflow_datasets)
    data.channels = 3  # folder datasets: 1 (greyscale), 3 (RGB) or 4 (RGBA)
    data.split_fractions = DEFAULT_FRACTIONS  # folder datasets without splits.json
    data.split_seed = 0  # how a folder dataset without splits.json is split
    data.num_classes = 0  # 0: the dataset's own class list
    data.class_names = ()  # names for a folder dataset without classes.json
    data.ignore_label = 255  # pixels with this mask value count nowhere
    # Training crops (height, width). On XLA:CPU 96x96 trains faster than 64x64 or 128x128.
    data.image_size = (96, 96)
    data.eval_size = ()  # () = full resolution, else (height, width) to resize to
    data.mean = ()  # () = ImageNet statistics
    data.std = ()  # () = ImageNet statistics
    # Instance models: detection targets per training crop, with this many slots (0: none; the
    # largest objects are kept where a crop holds more), objects cut by the crop to fewer
    # pixels than min_instance_area dropped.
    data.max_instances = 0
    data.min_instance_area = 4  # pixels; smaller remnants of objects cut by a crop dropped
    # The training pipeline: threads per process, and worker processes (grain's mp_prefetch),
    # each with its own threads; -1 = by the host's cores (segjax.data.pipeline.auto_workers:
    # none on small hosts). The batches are the same for any counts.
    data.num_threads = 2
    data.num_workers = -1  # grain worker processes; -1 = by the host's cores
    data.prefetch = 4  # batches read ahead
    # True: training examples stay in memory once decoded (the split must fit, once per worker
    # process); later epochs skip decoding, the host's main cost with augment.on_device.
    data.cache = False
    data.augment = ml_collections.ConfigDict()
    data.augment.scale_range = (0.75, 1.5)  # random zoom of each training crop
    # True: each training image is resized whole to image_size (no crop, scale_range unused),
    # as pytorch-nested-unet trains; evaluate such a run at data.eval_size = image_size.
    data.augment.whole_image = False
    data.augment.hflip = True  # random horizontal flips
    data.augment.vflip = False  # random vertical flips
    data.augment.rot90 = False  # random quarter turns
    data.augment.color_jitter = 0.1  # brightness, contrast, saturation: +-this fraction
    # True: the host only draws each example's augmentation and cuts out the pixels it reads;
    # the warp, flips, jitter and normalisation run in the jitted train step on the device
    # (segjax/data/device_augment.py), the same batches up to float rounding. For hosts that
    # cannot keep an accelerator fed; not with whole_image or instance models.
    data.augment.on_device = False

    if variant in ("small", "smoke"):
        data.name = "segjax_shapes/small"
        data.image_size = (64, 64)
    if variant == "smoke":
        data.image_size = (32, 32)
        data.eval_size = (32, 32)
        config.batch_size = 4
        config.total_steps = 6
        config.log_every_steps = 2
        config.eval_every_steps = 3
        config.checkpoint_every_steps = 3
        opt.warmup_steps = 1
    elif variant == "dsb2018":
        data.name = "folder"
        data.path = "../shared/data/dsb2018_nuclei"
        data.num_classes = 2  # binary 0/255 masks
        data.class_names = ("background", "nucleus")
        data.augment.vflip = True
        data.augment.rot90 = True
        data.augment.scale_range = (0.5, 1.5)
        data.image_size = (128, 128)
    elif variant not in (None, "", "small"):
        raise ValueError(f"unknown config variant {variant!r}; choose one of {list(VARIANTS)}")
    return config


def instance_config(variant: str | None, pyramid: str) -> ml_collections.ConfigDict:
    """Mask R-CNN on ResNet-18 with a ``pyramid`` ('fpn', 'unetpp', 'fpn_repeated'), for instances.

    Anchor sizes 8..128 (P2..P6) suit objects of 4 to 200 pixels across, such as nuclei; the
    counts are smaller than Detectron2's (built for 800-pixel COCO images) to suit 128-pixel
    training crops on a CPU: 512 proposals per level before NMS and 512 after in training,
    128 sampled RoIs per image (so up to 32 masks), a 256-wide box head and a 4 x 64 mask
    head (training steps 2.2 s against 7.7 s with 4 x 128 there); at test time 1000 proposals
    and up to 400 detections per image (DSB images hold up to 375 nuclei). ``config.loss``
    does not apply: Mask R-CNN minimises its own five losses (``segjax.detection.losses``).
    """
    config = base_config(variant)
    model = config.model
    model.arch = "maskrcnn"
    model.encoder = "resnet18"
    model.pyramid = pyramid
    model.pyramid_channels = 128
    model.anchor_sizes = (8.0, 16.0, 32.0, 64.0, 128.0)
    model.rpn_pre_nms_train = 512
    model.rpn_post_nms_train = 512
    model.rpn_pre_nms_test = 1000
    model.rpn_post_nms_test = 1000
    model.roi_batch_per_image = 128
    model.box_head_dim = 256
    model.mask_head_channels = 64
    model.max_detections = 400
    config.best_metric = "dsb_score"
    config.data.max_instances = 128
    config.data.min_instance_area = 4
    if variant == "smoke":
        model.pyramid_channels = 32
        model.rpn_pre_nms_train = model.rpn_post_nms_train = 64
        model.rpn_pre_nms_test = model.rpn_post_nms_test = 64
        model.roi_batch_per_image = 16
        model.box_head_dim = 32
        model.mask_head_channels = 16
        model.mask_head_convs = 1
        model.max_detections = 10
        config.data.max_instances = 8
        config.data.min_instance_area = 2
    return config
