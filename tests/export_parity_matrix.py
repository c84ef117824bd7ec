"""The full export parity matrix (the tests run a few of its cells; this runs them all):

    python -m tests.export_parity_matrix [--sizes 64x64,64x96] [--archs ...] [--encoders ...]

Every encoder (ResNet-18/34/50/101, GhostNet 0.5/1.0/1.3, MobileNetV2, EfficientNet-Lite0 in
both paddings) with U-Net, U-Net++ and U-Net++ with deep supervision, and the paper U-Net; random
weights (seed 0: kernels of flax's default variance, 1 / fan-in; biases N(0, 0.1)) with
BatchNorm running statistics drawn away from their (0, 1) initial values so that they matter
(means N(0, 0.2), variances U(1, 2): variances below 1 amplify, and through ResNet-101's 100-odd
BatchNorms they gave a deep-supervised U-Net++ heads with logits of 1e5, which no trained model
has, where float32 rounding alone exceeds the tolerance); 2 classes, 3 channels. For each
model: the ONNX file (``segjax.export``'s jax2onnx path, one per input size) run by onnxruntime at
batch 1 and 3 against the JAX logits (pass: max |diff| <= 1e-4 x max |JAX|), and the StableHLO
file (one, symbolic sizes) reloaded in a fresh process at every size and batch (pass: max |diff|
<= 1e-5 x max(1, max |JAX|)). Needs the deploy extra. Prints a table; exit 1 if any cell fails.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

ENCODERS = ("resnet18", "resnet34", "resnet50", "resnet101", "ghostnet_050", "ghostnet_100",
            "ghostnet_130", "mobilenet_v2", "efficientnet_lite0",
            "efficientnet_lite0_smp")  # fmt: skip
ARCHS = ("unet", "unetpp", "unetpp_ds", "unet_paper")
BATCHES = (1, 3)

RELOAD = """
import sys
import numpy as np
from segjax.inference import load_stablehlo
folder = sys.argv[1]
for name in open(folder + "/list.txt").read().split():
    call = load_stablehlo(f"{folder}/{name}.stablehlo")
    inputs = np.load(f"{folder}/{name}_inputs.npz")
    outputs = {k: np.asarray(call(v)) for k, v in inputs.items()}
    np.savez(f"{folder}/{name}_stablehlo.npz", **outputs)
"""


def restored_model(arch: str, encoder: str, seed: int = 0):
    import jax

    from segjax.defaults import base_config
    from segjax.inference import Restored
    from segjax.validation import build_model
    from tests.model_utils import random_variables

    config = base_config()
    config.model.arch = "unetpp" if arch == "unetpp_ds" else arch
    config.model.encoder = "" if arch == "unet_paper" else encoder
    config.model.deep_supervision = arch == "unetpp_ds"
    model = build_model(config, 2, 3)
    # Filled with NumPy from the traced shapes: compiling a U-Net++'s init took 30 s.
    variables = random_variables(model, (1, 64, 64, 3), seed, gain=1.0, bias_std=0.1, train=False)
    rng = np.random.default_rng(seed)

    def perturb(path, x):
        leaf = path[-1].key
        if leaf == "mean":
            return rng.normal(0, 0.2, x.shape).astype(x.dtype)
        if leaf == "var":  # >= 1: see the module docstring
            return rng.uniform(1.0, 2.0, x.shape).astype(x.dtype)
        return x

    if "batch_stats" in variables:
        variables = {
            **variables,
            "batch_stats": jax.tree_util.tree_map_with_path(perturb, variables["batch_stats"]),
        }
    return Restored(
        model=model,
        variables=variables,
        config=config,
        class_names=("background", "foreground"),
        channels=3,
        multiple=int(model.pad_multiple or model.encoder.strides[-1]),
        step=0,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64x64,64x96")
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    args = parser.parse_args()
    import jax
    import onnxruntime

    from segjax.export import export_function, export_onnx, export_stablehlo

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    models = []
    for arch in args.archs.split(","):
        encoders = [""] if arch == "unet_paper" else args.encoders.split(",")
        models += [(arch, encoder) for encoder in encoders]
    rows, failed = [], 0
    with tempfile.TemporaryDirectory(prefix="segjax-parity-") as folder:
        names = []
        for arch, encoder in models:
            name = f"{arch}_{encoder or 'plain'}"
            print(f"{name} ...", flush=True)
            restored = restored_model(arch, encoder)
            forward = jax.jit(export_function(restored))
            rng = np.random.default_rng(1)
            inputs = {
                f"{h}x{w}_b{b}": rng.normal(size=(b, h, w, 3)).astype(np.float32)
                for h, w in sizes
                for b in BATCHES
            }
            expected = {k: np.asarray(forward(x)) for k, x in inputs.items()}
            # Jitted: op-by-op, a deep-supervised U-Net++ took minutes to dispatch.
            heads = jax.jit(restored.model.apply)(restored.variables, next(iter(inputs.values())))
            heads = heads if isinstance(heads, list) else [heads]
            max_logit = max(float(np.abs(np.asarray(h)).max()) for h in heads)
            with open(os.path.join(folder, f"{name}.stablehlo"), "wb") as file:
                file.write(export_stablehlo(restored))
            np.savez(os.path.join(folder, f"{name}_inputs.npz"), **inputs)
            np.savez(os.path.join(folder, f"{name}_expected.npz"), **expected)
            onnx_diff = {}
            for h, w in sizes:
                session = onnxruntime.InferenceSession(export_onnx(restored, (h, w)))
                for b in BATCHES:
                    key = f"{h}x{w}_b{b}"
                    got = session.run(None, {session.get_inputs()[0].name: inputs[key]})[0]
                    scale = np.abs(expected[key]).max()
                    onnx_diff[key] = float(np.abs(got - expected[key]).max() / scale)
            names.append(name)
            rows.append({"model": name, "onnx": onnx_diff, "max_logit": max_logit})
        with open(os.path.join(folder, "list.txt"), "w") as file:
            file.write("\n".join(names))
        reload = subprocess.run(
            [sys.executable, "-c", RELOAD, folder], capture_output=True, text=True
        )
        if reload.returncode != 0:
            sys.exit(f"the fresh process failed:\n{reload.stderr[-3000:]}")
        for row in rows:
            name = row["model"]
            expected = np.load(os.path.join(folder, f"{name}_expected.npz"))
            reloaded = np.load(os.path.join(folder, f"{name}_stablehlo.npz"))
            row["stablehlo"] = {k: float(np.abs(reloaded[k] - expected[k]).max()) for k in expected}
    print(
        "\n| model | ONNX max |diff| / max |JAX| (worst of sizes " + args.sizes + ", batch 1 and 3)"
        " | StableHLO fresh process max |diff| | max |logit| | pass |\n|---|---:|---:|---:|---|"
    )
    for row in rows:
        onnx_worst, hlo_worst = max(row["onnx"].values()), max(row["stablehlo"].values())
        # StableHLO's symbolic sizes compile to other loops than the JAX function's fixed ones,
        # so float32 rounding differs in proportion to the logits (1.6e-5 at 8.4 with LLVM
        # unoptimised, as the tests compile): relative, ten times tighter than ONNX's.
        ok = onnx_worst <= 1e-4 and hlo_worst <= 1e-5 * max(1.0, row["max_logit"])
        failed += not ok
        print(
            f"| {row['model']} | {onnx_worst:.2e} | {hlo_worst:.2e} | {row['max_logit']:.3g} | "
            f"{'yes' if ok else 'NO'} |"
        )
    print(f"\n{len(rows) - failed} of {len(rows)} models pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
