"""Seeded mutants of a small state dict read by the ``.pth`` reader, each in a forked process
with a time and a memory limit: every one must be loaded or refused with one line, never raise
anything else, never pass a limit, and never change the reader for a later file.

    python -m tests.torch_fuzz --mutants 300 --seed 0 --json fuzz.json

Mutants: byte flips, random overwrites, truncations, deletions and duplications of a chunk, over
the whole file of both formats (zip archive and legacy stream), and the same over the pickle
alone, re-archived so that the zip itself stays valid and the mutation reaches the unpickler.
The reader module is loaded by path (no JAX in the forked processes). Prints a summary line and
the figures; exits 1 if any mutant failed.
"""

import argparse
import importlib.util
import io
import json
import os
import pathlib
import resource
import signal
import sys
import tempfile
import time
import traceback
import zipfile

import numpy as np

from tests import torch_files

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIME_LIMIT_S = 10
MEMORY_LIMIT_BYTES = 1 << 30  # above the process's size at the fork


def load_reader():
    path = ROOT / "segjax" / "models" / "weights" / "torch_pickle.py"
    spec = importlib.util.spec_from_file_location("torch_pickle_under_fuzz", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def state_dict() -> dict:
    """A small state dict of the shapes and dtypes a real one has (conv, BN, int64 counter)."""
    rng = np.random.default_rng(0)
    return torch_files.tensors_of(
        {
            "conv1.weight": rng.normal(size=(8, 3, 3, 3)).astype(np.float32),
            "bn1.weight": np.ones(8, np.float32),
            "bn1.bias": np.zeros(8, np.float32),
            "bn1.running_mean": rng.normal(size=8).astype(np.float32),
            "bn1.num_batches_tracked": np.array(7, np.int64),
            "fc.weight": rng.normal(size=(4, 8)).astype(np.float16),
        }
    )


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    kind = rng.integers(5)
    at = int(rng.integers(len(out)))
    if kind == 0:  # flip 1-8 bytes
        for index in rng.integers(len(out), size=int(rng.integers(1, 9))):
            out[index] ^= int(rng.integers(1, 256))
    elif kind == 1:  # overwrite a chunk with random bytes
        length = int(rng.integers(1, 33))
        out[at : at + length] = rng.integers(256, size=length, dtype=np.uint8).tobytes()
    elif kind == 2:  # truncate
        del out[at:]
    elif kind == 3:  # delete a chunk
        del out[at : at + int(rng.integers(1, 33))]
    else:  # duplicate a chunk in place
        chunk = out[at : at + int(rng.integers(1, 65))]
        out[at:at] = chunk
    return bytes(out)


def rezip_with_pickle(archive_bytes: bytes, pkl: bytes) -> bytes:
    """The archive with its data.pkl replaced (stored, valid zip)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as source:
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as out:
            for info in source.infolist():
                data = pkl if info.filename.endswith("data.pkl") else source.read(info)
                out.writestr(info.filename, data)
    return buffer.getvalue()


def seeds(directory: str) -> dict[str, bytes]:
    paths = {"zip": os.path.join(directory, "seed.pth"), "legacy": os.path.join(directory, "l.pth")}
    torch_files.write_zip(paths["zip"], state_dict())
    torch_files.write_legacy(paths["legacy"], state_dict())
    return {name: open(path, "rb").read() for name, path in paths.items()}


def mutants(count: int, seed: int, originals: dict[str, bytes]):
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(io.BytesIO(originals["zip"])) as archive:
        pkl = archive.read("archive/data.pkl")
    for index in range(count):
        where = ("zip", "legacy", "pickle")[index % 3]
        if where == "pickle":
            yield where, rezip_with_pickle(originals["zip"], mutate(pkl, rng))
        else:
            yield where, mutate(originals[where], rng)


def status_kib(field: str) -> int:
    """A figure of /proc/self/status, in KiB (VmSize: address space, VmRSS: resident)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(reader, path: str, good: str, expected: dict, write_end: int) -> None:
    """Runs in the forked process: reads the mutant under the limits, then checks that the good
    file still reads the same; reports one JSON line through the pipe."""
    limit = status_kib("VmSize") * 1024 + MEMORY_LIMIT_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.alarm(TIME_LIMIT_S)
    resident = status_kib("VmRSS")
    start = time.perf_counter()
    try:
        reader.read_torch_file(path)
        outcome, message = "loaded", ""
    except reader.TorchFileError as error:
        message = str(error)
        outcome = "over memory" if "MemoryError" in message else "refused"
        if "\n" in message:
            outcome = "multi-line refusal"
    except BaseException:  # what the test exists to find
        outcome, message = "crashed", traceback.format_exc(limit=-3)
    seconds = time.perf_counter() - start
    peak_mib = max(status_kib("VmHWM") - resident, 0) / 1024
    signal.alarm(0)
    after = reader.read_torch_file(good)
    changed = sorted(k for k in expected if not np.array_equal(after[k], expected[k]))
    if changed or set(after) != set(expected):
        outcome, message = "changed the reader", f"the good file now reads differently: {changed}"
    os.write(
        write_end,
        json.dumps(
            {"outcome": outcome, "message": message, "s": seconds, "peak_mib": peak_mib}
        ).encode(),
    )


def run_one(reader, data: bytes, directory: str, good: str, expected: dict) -> dict:
    path = os.path.join(directory, "mutant.pth")
    with open(path, "wb") as file:
        file.write(data)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            child(reader, path, good, expected, write_end)
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    report = os.read(read_end, 1 << 20)
    os.close(read_end)
    if not report:
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM
        outcome = "over time" if killed else f"died ({status})"
        return {"outcome": outcome, "message": "", "s": TIME_LIMIT_S, "peak_mib": float("nan")}
    return json.loads(report)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    args = parser.parse_args()
    reader = load_reader()
    with tempfile.TemporaryDirectory() as directory:
        originals = seeds(directory)
        good = os.path.join(directory, "good.pth")
        with open(good, "wb") as file:
            file.write(originals["zip"])
        expected = reader.read_torch_file(good)
        results = []
        for where, data in mutants(args.mutants, args.seed, originals):
            results.append({"where": where, **run_one(reader, data, directory, good, expected)})
    counts: dict[str, int] = {}
    for result in results:
        counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
    slowest = max(results, key=lambda r: r["s"])
    largest = max(results, key=lambda r: r["peak_mib"])
    summary = {
        "mutants": len(results),
        "outcomes": counts,
        "slowest_s": slowest["s"],
        "largest_peak_mib": largest["peak_mib"],
        "limits": {"seconds": TIME_LIMIT_S, "mib_above_fork": MEMORY_LIMIT_BYTES >> 20},
        "failures": [r for r in results if r["outcome"] not in ("loaded", "refused")],
    }
    print(
        f"{len(results)} mutants: "
        + ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        + f"; slowest {slowest['s'] * 1000:.1f} ms, largest peak {largest['peak_mib']:.1f} MiB"
    )
    for failure in summary["failures"][:5]:
        print(f"  {failure['where']}: {failure['outcome']}: {failure['message'][-500:]}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({**summary, "results": results}, file, indent=1)
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
