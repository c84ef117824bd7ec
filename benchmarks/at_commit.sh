#!/usr/bin/env bash
# Runs this checkout's speed benchmark on the library of an earlier commit, so that two commits
# are compared by the same measurement (the same harness, interleaving and pooling) in one sitting:
#
#   benchmarks/at_commit.sh dabf1a4 --config configs/resnet_unet.py:dsb2018 \
#       --models unet:resnet34,unet:ghostnet_100 --inference_batches 1 --processes 4 \
#       --json benchmarks/results/speed_dabf1a4.json
#
# A git worktree of COMMIT is made under ${AT_COMMIT_DIR:-/tmp/segjax-at-commit}/COMMIT; the
# harness (benchmarks/speed.py, benchmarks/smp_reference.py, segjax/benchmark.py) is copied over
# it from this checkout, and where COMMIT predates segjax/runs.py (prepare and jit_train_step
# lived in segjax/trainer.py) a one-line module re-exports them. Everything the harness times,
# the models, the train step, the losses, the optimizer, the data pipeline and the XLA flags,
# stays COMMIT's. Relative paths in the flags (--config, --json, data.path) are taken from here;
# COMMIT prepares its datasets in a TFDS data dir of its own (datasets' builders change).
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 COMMIT [benchmarks.speed flags]" >&2
  exit 2
fi
HERE=$(cd "$(dirname "$0")/.." && pwd)
COMMIT=$(git -C "$HERE" rev-parse --short "$1")
shift
TREE=${AT_COMMIT_DIR:-/tmp/segjax-at-commit}/$COMMIT
if [ ! -d "$TREE" ]; then
  git -C "$HERE" worktree add --detach "$TREE" "$COMMIT" >&2
fi
cp "$HERE"/benchmarks/speed.py "$HERE"/benchmarks/smp_reference.py "$TREE"/benchmarks/
cp "$HERE"/segjax/benchmark.py "$TREE"/segjax/benchmark.py
if [ ! -f "$TREE/segjax/runs.py" ]; then
  echo "from segjax.trainer import jit_train_step, prepare  # noqa: F401" > "$TREE/segjax/runs.py"
fi
# Flags that name files: absolute, so they mean the same from the worktree.
ARGS=()
for arg in "$@"; do
  case "$arg" in
    --config=*|--json=*) key=${arg%%=*}; value=${arg#*=}
      [[ "$value" = /* ]] || value="$PWD/$value"; ARGS+=("$key=$value") ;;
    *) ARGS+=("$arg") ;;
  esac
done
for i in "${!ARGS[@]}"; do  # "--config PATH" and "--json PATH" as two words
  if [[ "${ARGS[$i]}" = --config || "${ARGS[$i]}" = --json ]] && [[ "${ARGS[$((i + 1))]}" != /* ]]; then
    ARGS[$((i + 1))]="$PWD/${ARGS[$((i + 1))]}"
  fi
done
DATA=${DATA_PATH:-$HERE/../shared/data/dsb2018_nuclei}
cd "$TREE"
echo "benchmarks.speed at $COMMIT ($(git log -1 --format='%ad %s' --date=short | cut -c1-80))" >&2
PYTHONPATH="$TREE" exec python -m benchmarks.speed "${ARGS[@]}" \
  --config.data.path="$DATA" --config.data.data_dir="$TREE/.tfds"
