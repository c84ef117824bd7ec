#!/bin/bash
# The wheels a lent GPU machine's image lacks (Python 3.12 there), into .whl/ (git-ignored), for
# benchmarks/device/gpu_checks.sh: the data stack (TFDS, grain and what they import), the config
# and logging packages, and segmentation-models-pytorch (torch, torchvision and timm are there).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    $PLATFORMS -d .whl \
    ml-collections==1.1.0 tensorflow-datasets==4.9.10 grain==0.2.18 array-record==0.8.6 \
    tensorboardX==2.6.5 dm-tree immutabledict simple-parsing docstring-parser \
    tensorflow-metadata googleapis-common-protos termcolor toml portpicker importlib_resources \
    segmentation-models-pytorch==0.6.0 pycocotools
# promise ships no wheel: build one.
python3 -m pip wheel -q --no-deps -w .whl promise==2.3
du -sh .whl
