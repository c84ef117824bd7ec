#!/bin/bash
# The founding grid on a lent GPU machine (experiments/founding_h200.py:grid), from the repository
# root, with what the machine lacks carried along (see "On a lent GPU" in README.md here):
#   .whl/         wheels of the packages its image lacks (.whl/pinned: flax, orbax, optax as
#                 pyproject.toml pins them, used only if the image's own fail the smoke run)
#   .devcarry/dsb2018_nuclei_96   the data, resized ahead (resize_dataset.py: the same arrays)
#   weights/      the two ImageNet files (python -m segjax.imagenet_weights --out weights)
# A smoke run (a few steps, a checkpoint, a test evaluation) first; then PARALLEL members at a time,
# every seed 0 before any seed 1 so later seeds find their programs in the compilation cache.
# Members still running at DEADLINE seconds are stopped; the records of those finished are packed
# into $OUT/$RECORDS.tar.gz (experiments/founding/grid_h200/members once unpacked).
# EXPERIMENT=experiments/founding.py:grid trains CPU-grid members there under the CPU grid's own
# protocol (float32, batch 8; with JAX_DEFAULT_MATMUL_PRECISION=highest, no TF32), and INT8=1 then
# measures their int8 drop there too (int8_accuracy.py, min/max and percentile 99.9, one process
# per member and calibration), since a finished member's checkpoint cannot come back: the two
# files per member are packed with its records, under int8/.
set -u
START=$(date +%s)
OUT=${OUT:-runs/h200_out}; mkdir -p "$OUT"; OUT_ABS=$(cd "$OUT" && pwd)
WORKDIR=${WORKDIR:-runs/founding_grid_h200}
DATA=${DATA:-.devcarry/dsb2018_nuclei_96}
PARALLEL=${PARALLEL:-6}
DEADLINE=${DEADLINE:-480}
ONLY=${ONLY:-}    # a few member names (a CPU check of this script), else all
EXTRA=${EXTRA:-}  # more runner flags, e.g. "--set total_steps=4 ..." for that check
SMOKE=${SMOKE:-1} # 0: no smoke run (a rerun on a machine that passed it)
# Members finished on an earlier machine (their committed records) are copied in first, so that a
# later device session trains only what is missing (the runner skips finished members).
PREVIOUS=${PREVIOUS:-experiments/founding/grid_h200/members}
EXPERIMENT=${EXPERIMENT:-experiments/founding_h200.py:grid}
RECORDS=${RECORDS:-h200_records}
WHEELS=${WHEELS-.whl}  # empty: installed already (two grids started side by side)
INT8=${INT8:-0}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false
export JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache
PY=${PY:-python3}
INT8_NOTE=${INT8_NOTE:-"trained and measured on a lent GPU machine"}
elapsed() { echo $(( $(date +%s) - START )); }

install() {  # install DIR: its wheels into /tmp/site, ahead of the image's packages
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "$1"/*.whl || exit 1
}
if [ -n "$WHEELS" ] && [ -d "$WHEELS" ]; then install "$WHEELS"; fi
export PYTHONPATH=/tmp/site:$PWD

versions() {
  $PY -c "import jax, flax, optax, orbax.checkpoint as ocp, grain, tensorflow_datasets as t
print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__,
      'orbax', ocp.__version__, 'tfds', t.__version__, jax.devices())"
}
smoke() {
  rm -rf /tmp/smoke
  $PY -m segjax.train --config configs/resnet_unet.py:dsb2018 --config.data.path="$DATA" \
      --config.model.encoder=resnet18 --config.batch_size=64 --config.model.dtype=bfloat16 \
      --config.data.image_size=96,96 --config.data.eval_size=96,96 \
      --config.data.augment.whole_image=True --config.total_steps=4 --config.optimizer.warmup_steps=1 \
      --config.eval_every_steps=2 --config.checkpoint_every_steps=2 --workdir /tmp/smoke \
      > "$OUT/smoke.log" 2>&1 \
    && $PY -m segjax.evaluate --workdir /tmp/smoke --split test >> "$OUT/smoke.log" 2>&1
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
versions
if [ "$SMOKE" = 1 ] && ! smoke; then
  tail -5 "$OUT/smoke.log"
  if [ -d .whl/pinned ]; then
    echo "smoke run failed with the image's flax/orbax/optax; with pyproject's pins:"
    install .whl/pinned; versions
    smoke || { tail -30 "$OUT/smoke.log"; exit 1; }
  else
    exit 1
  fi
fi
[ "$SMOKE" = 1 ] && echo "smoke run passed at $(elapsed) s"

# Members: seed 0 of every model first (the longest first), then seed 1, then seed 2.
NAMES=$($PY -m segjax.experiments.run $EXPERIMENT --workdir "$WORKDIR" --nospeed --dry_run \
        | sed -n 's/^\[[0-9]*\/[0-9]*\] \([^:]*\):.*/\1/p' \
        | awk '{s=$0; sub(/.*_seed/, "", s); print s, ($0 ~ /unetpp_paper|unet_resnet34/ ? 0 : 1), $0}' \
        | sort -k1,1n -k2,2n -s | cut -d' ' -f3)
NAMES=${ONLY:-$NAMES}
echo "$(echo $NAMES | wc -w) members, $PARALLEL at a time"
mkdir -p "$WORKDIR"
if [ -d "$PREVIOUS" ]; then
  cp -rn "$PREVIOUS"/. "$WORKDIR"/
  echo "$(ls "$PREVIOUS" | wc -l) members' records copied in from $PREVIOUS"
fi
echo $NAMES | tr ' ' '\n' | xargs -P "$PARALLEL" -I{} sh -c \
  "$PY -m segjax.experiments.run $EXPERIMENT --workdir $WORKDIR --nospeed --only {} \
     --set data.path=$DATA $EXTRA > $WORKDIR/{}.run.log 2>&1; echo \"  {} rc=\$? at \$(( \$(date +%s) - $START )) s\"" &
RUNNER=$!
while kill -0 $RUNNER 2>/dev/null && [ "$(elapsed)" -lt "$DEADLINE" ]; do sleep 5; done
if kill -0 $RUNNER 2>/dev/null; then
  echo "deadline ($DEADLINE s) reached: stopping the members still running"
  pkill -f -- "--workdir $WORKDIR"; sleep 5  # this grid's runners and their members only
fi
FINISHED=$(grep -l '"finished": true' "$WORKDIR"/*/member.json 2>/dev/null | xargs -r -n1 dirname | xargs -r -n1 basename)
echo "finished: $(echo $FINISHED | wc -w) at $(elapsed) s"
if [ "$INT8" = 1 ]; then
  mkdir -p "$WORKDIR/int8"; pids=()
  for m in $NAMES; do
    [ -f "$WORKDIR/$m/eval_test.json" ] || continue
    mkdir -p "/tmp/int8_$m" && ln -sfn "$(cd "$WORKDIR/$m" && pwd)" "/tmp/int8_$m/$m"
    $PY experiments/founding/int8_accuracy.py --workdir "/tmp/int8_$m" \
        --out "$WORKDIR/int8/$m.int8.json" --note "$INT8_NOTE" > "$WORKDIR/int8/$m.log" 2>&1 & pids+=($!)
    $PY experiments/founding/int8_accuracy.py --workdir "/tmp/int8_$m" --percentile 99.9 \
        --out "$WORKDIR/int8/$m.int8_percentile.json" --note "$INT8_NOTE" \
        > "$WORKDIR/int8/$m.percentile.log" 2>&1 & pids+=($!)
  done
  wait "${pids[@]}"
  grep -h "nucleus IoU\|error" "$WORKDIR"/int8/*.log
  echo "int8 measured at $(elapsed) s"
fi
( cd "$WORKDIR" && tar czf "$OUT_ABS/$RECORDS.tar.gz" \
    $(for m in $FINISHED; do for f in config.json dataset.json member.json eval_test.json \
      metrics.jsonl model.txt train.log eval.log; do [ -f "$m/$f" ] && echo "$m/$f"; done; done) \
    *.run.log $([ -d int8 ] && echo int8) ) 2>/dev/null
ls -la "$OUT"
