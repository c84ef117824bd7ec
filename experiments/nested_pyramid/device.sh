#!/bin/bash
# experiments/nested_pyramid.py on a lent GPU machine, from the repository root, with what the
# machine lacks carried along:
#   .whl/              wheels of the packages its image lacks (benchmarks/device/fetch_wheels.sh)
#   .devcarry/dsb2018  the data (python benchmarks/device/pack_data.py ../shared/data/dsb2018_nuclei
#                      .devcarry/dsb2018: the same arrays, 33 MB)
# The members train under the CPU protocol (float32, JAX_DEFAULT_MATMUL_PRECISION=highest: no
# TF32, batch 8), PARALLEL at a time (segjax.experiments.run --parallel: device memory split,
# one compilation cache). Members finished on an earlier machine (the committed records under
# experiments/nested_pyramid/$VARIANT/members) are copied in first, so the runner trains only what
# is missing. At DEADLINE seconds the members still running are stopped (a loan is short; size
# the budget so members finish within one); the finished members' records are packed into
# $OUT/$VARIANT_records.tar.gz (unpack under experiments/nested_pyramid/$VARIANT/members).
# For the tuning, each Mask R-CNN trained here then gets its threshold study (threshold_choice.py,
# which needs the checkpoint that cannot travel back) in the last STUDY_SECONDS before DEADLINE:
# its thresholds_validation.json is packed with the records.
# A CPU check of this script: VARIANT=tuning ONLY=<two members> EXTRA="--set total_steps=4 ..."
set -u
START=$(date +%s)
OUT=${OUT:-runs/device_out}; mkdir -p "$OUT"; OUT_ABS=$(cd "$OUT" && pwd)
VARIANT=${VARIANT:-tuning}
WORKDIR=${WORKDIR:-runs/nested_$VARIANT}
DATA=${DATA:-.devcarry/dsb2018}
PARALLEL=${PARALLEL:-4}
DEADLINE=${DEADLINE:-480}
ONLY=${ONLY:-}     # comma-separated member names, else every member without a record in PREVIOUS
EXTRA=${EXTRA:-}   # more runner flags
SPEED=${SPEED:-0}  # 1: time every finished member here, alone (those trained elsewhere too)
STUDY_SECONDS=${STUDY_SECONDS:-$([ "$VARIANT" = tuning ] && echo 240 || echo 0)}
STUDY_FLAGS=${STUDY_FLAGS:-}  # more threshold_choice.py flags (a CPU check: fewer settings)
PREVIOUS=${PREVIOUS:-experiments/nested_pyramid/$VARIANT/members}
WHEELS=${WHEELS-.whl}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 JAX_DEFAULT_MATMUL_PRECISION=highest
elapsed() { echo $(( $(date +%s) - START )); }

if [ -n "$WHEELS" ] && [ -d "$WHEELS" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$PY -c "import jax; print('jax', jax.__version__, jax.devices())" || exit 1

mkdir -p "$WORKDIR"
if [ -d "$PREVIOUS" ]; then
  cp -rn "$PREVIOUS"/. "$WORKDIR"/
  echo "$(ls "$PREVIOUS" | wc -l) members' records copied in from $PREVIOUS"
fi
if [ -z "$ONLY" ] && [ -d "$PREVIOUS" ]; then
  # Only the members without a finished record: those trained elsewhere (the U-Net's on a CPU,
  # with the data's own path) are not the runner's to check against this machine's data path.
  ONLY=$($PY - "$VARIANT" "$PREVIOUS" <<'PY'
import json, os, sys
from segjax.experiments.spec import load_experiment
variant, previous = sys.argv[1:]
def finished(name):
    path = os.path.join(previous, name, "member.json")
    return os.path.isfile(path) and json.load(open(path)).get("finished", False)
members = load_experiment(f"experiments/nested_pyramid.py:{variant}").members
print(",".join(m.name for m in members if not finished(m.name)))
PY
) || exit 1
  if [ -z "$ONLY" ]; then
    echo "every member of $VARIANT has a finished record in $PREVIOUS"
    [ "$SPEED" = 1 ] || exit 0
    TRAIN=0
  else
    echo "to train: $ONLY"
  fi
fi
if [ "${TRAIN:-1}" = 1 ]; then
  SPEED_FLAG=$([ "$SPEED" = 1 ] && echo --speed || echo --nospeed)
  ONLY_FLAG=$([ -n "$ONLY" ] && echo "--only=$ONLY")
  $PY -m segjax.experiments.run "experiments/nested_pyramid.py:$VARIANT" --workdir "$WORKDIR" \
      --parallel "$PARALLEL" $SPEED_FLAG $ONLY_FLAG --set "data.path=$DATA" $EXTRA \
      > "$OUT/runner.log" 2>&1 &
  RUNNER=$!
  TRAIN_DEADLINE=$(( DEADLINE - STUDY_SECONDS ))
  while kill -0 $RUNNER 2>/dev/null && [ "$(elapsed)" -lt "$TRAIN_DEADLINE" ]; do sleep 5; done
  if kill -0 $RUNNER 2>/dev/null; then
    echo "training deadline ($TRAIN_DEADLINE s) reached: stopping the members still running"
    pkill -f -- "--workdir $WORKDIR"; sleep 5
  fi
  wait $RUNNER 2>/dev/null; echo "runner exit $? at $(elapsed) s"
  tail -40 "$OUT/runner.log"
fi
FINISHED=$(grep -l '"finished": true' "$WORKDIR"/*/member.json 2>/dev/null \
           | xargs -r -n1 dirname | xargs -r -n1 basename)
echo "finished: $(echo $FINISHED | wc -w) members"
if [ "$STUDY_SECONDS" -gt 0 ]; then
  # PARALLEL studies at a time, each with its share of the device's memory, all stopped at
  # DEADLINE; only members trained here have a checkpoint to study.
  export XLA_PYTHON_CLIENT_MEM_FRACTION=$($PY -c "print(f'{0.9 / $PARALLEL:.3f}')")
  for m in $FINISHED; do
    case "$m" in maskrcnn_*) ;; *) continue ;; esac
    [ -f "$WORKDIR/$m/thresholds_validation.json" ] || [ ! -d "$WORKDIR/$m/checkpoints" ] && continue
    while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do sleep 1; done
    LEFT=$(( DEADLINE - $(elapsed) ))
    [ "$LEFT" -gt 0 ] || { echo "deadline: no threshold study of $m"; continue; }
    ( if timeout "$LEFT" $PY experiments/nested_pyramid/threshold_choice.py \
          --workdirs "$WORKDIR/$m" --out "$WORKDIR/$m/thresholds_validation.md" $STUDY_FLAGS \
          > "$OUT/thresholds_$m.log" 2>&1; then echo "$m: $(tail -1 "$WORKDIR/$m/thresholds_validation.md")"
      else echo "$m: threshold study FAILED or stopped at the deadline:"; tail -3 "$OUT/thresholds_$m.log"; fi ) &
  done
  wait
  unset XLA_PYTHON_CLIENT_MEM_FRACTION
fi
if [ "$SPEED" = 1 ]; then
  # One device times every member, so the cost table compares like with like: the members
  # copied in (trained on a CPU or an earlier machine) are timed here with this machine's data.
  SIZE=$($PY -c "from segjax.experiments.spec import load_experiment as l
print(l('experiments/nested_pyramid.py:$VARIANT').size)") || exit 1
  for m in $FINISHED; do
    [ -f "$WORKDIR/$m/speed.json" ] && continue
    [ "$(elapsed)" -lt "$DEADLINE" ] || { echo "deadline: $m not timed"; continue; }
    if $PY -m segjax.experiments.speed --workdir "$WORKDIR/$m" --size "$SIZE" \
        --data_path "$DATA" > "$OUT/speed_$m.log" 2>&1; then tail -1 "$OUT/speed_$m.log"
    else echo "$m: speed FAILED:"; tail -5 "$OUT/speed_$m.log"; fi
  done
fi
( cd "$WORKDIR" && tar czf "$OUT_ABS/${VARIANT}_records.tar.gz" \
    $(for m in $FINISHED; do for f in config.json dataset.json member.json eval_validation.json \
      eval_test.json metrics.jsonl model.txt speed.json thresholds_validation.json \
      thresholds_validation.md; do [ -f "$m/$f" ] && echo "$m/$f"; done; done) )
ls -la "$OUT"
