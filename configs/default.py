"""Defaults shared by every experiment: seed, batch, and the data section.

Variants (``configs/default.py:<variant>``): ``small`` is the tiny synthetic dataset for tests;
``dsb2018`` reads the DSB 2018 nuclei folder (``data.path``, binary masks, microscopy flips).
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.batch_size = 8  # global, over all processes

    config.data = data = ml_collections.ConfigDict()
    data.name = "segjax_shapes"  # segjax_shapes[/config], folder, or a name in segjax.data.STANDARD
    data.path = ""  # root of images/ and masks/ for name='folder'
    data.data_dir = ""  # TFDS data dir; '' = TFDS's default (~/tensorflow_datasets)
    data.channels = 3  # folder datasets: 1 (greyscale) or 3 (RGB)
    data.split_fractions = (0.8, 0.1, 0.1)  # folder datasets without splits.json
    data.split_seed = 0
    data.num_classes = 0  # 0: the dataset's own class list
    data.class_names = ()  # names for a folder dataset without classes.json
    data.ignore_label = 255  # pixels with this mask value count nowhere
    data.image_size = (128, 128)  # training crops (height, width)
    data.eval_size = ()  # () = full resolution, else (height, width) to resize to
    data.mean = ()  # () = ImageNet statistics
    data.std = ()
    data.num_threads = 2
    data.prefetch = 4
    data.augment = ml_collections.ConfigDict()
    data.augment.scale_range = (0.75, 1.5)
    data.augment.hflip = True
    data.augment.vflip = False
    data.augment.rot90 = False
    data.augment.color_jitter = 0.1

    if arg == "small":
        data.name = "segjax_shapes/small"
        data.image_size = (64, 64)
    elif arg == "dsb2018":
        data.name = "folder"
        data.path = "../shared/data/dsb2018_nuclei"
        data.num_classes = 2  # binary 0/255 masks
        data.class_names = ("background", "nucleus")
        data.augment.vflip = True
        data.augment.rot90 = True
        data.augment.scale_range = (0.5, 1.5)
    elif arg:
        raise ValueError(f"unknown variant {arg!r} of configs/default.py; use small or dsb2018")
    return config
