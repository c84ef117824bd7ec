#!/bin/bash
# Issue 50's accelerator checks in one call on a lent GPU machine, from the repository root:
#
#   benchmarks/device/fetch_wheels.sh              # here, once: .whl/ (what the image lacks)
#   python benchmarks/device/pack_data.py ../shared/data/dsb2018_nuclei .devcarry/dsb2018
#   # then, on the device, carrying .whl and .devcarry:
#   PARTS="speed e2e pipeline packing" DEADLINE=540 benchmarks/device/gpu_checks.sh
#
# Parts, in the order given, each stopped at its share of what is left of DEADLINE seconds:
#   speed     benchmarks.gpu_speed: segjax fp32/bf16 against smp eager/AMP/compile (SPEED_MODELS)
#   e2e       segjax.train end to end with the real pipeline, U-Net/ResNet-34 bf16 batch 128 at
#             256x256: train/data_wait_fraction with the augmentation on the host, and on the
#             device with decoded examples cached (E2E_WORKERS worker processes each)
#   pipeline  benchmarks.pipeline_speed by threads and worker processes on this host's cores
#   packing   benchmarks.sweep_packing with 1, 4, 8 members at once
# Everything lands in $OUT (JSON and logs); a part cut short keeps what it wrote.
# The same script runs on a CPU at a tiny size (tests/test_gpu_checks_script.py sets SIZE etc.).
set -u
START=$(date +%s)
OUT=${OUT:-runs/gpu_checks}; mkdir -p "$OUT"
PARTS=${PARTS:-speed e2e pipeline packing}
DEADLINE=${DEADLINE:-540}
DATA=${DATA:-.devcarry/dsb2018}
DATA_DIR=${DATA_DIR:-}  # the TFDS data dir ('': TFDS's default)
SIZE=${SIZE:-256}
SPEED_MODELS=${SPEED_MODELS:-unet:resnet34,unet:ghostnet_100,unet:mobilenet_v2,unetpp:resnet34}
SPEED_IMPLS=${SPEED_IMPLS:-segjax_fp32,segjax_bf16,smp_eager,smp_amp,smp_compile}
TRAIN_BATCHES=${TRAIN_BATCHES:-32,128}
INFER_BATCHES=${INFER_BATCHES:-1,64}
SPEED_STEPS=${SPEED_STEPS:-10}
E2E_BATCH=${E2E_BATCH:-128}
E2E_STEPS=${E2E_STEPS:-120}
E2E_WORKERS=${E2E_WORKERS:-12}
E2E_ENCODER=${E2E_ENCODER:-resnet34}
PIPE_THREADS=${PIPE_THREADS:-2,16}
PIPE_WORKERS=${PIPE_WORKERS:-0,8,15}
PIPE_CACHE=${PIPE_CACHE:-false,true}
PIPE_SECONDS=${PIPE_SECONDS:-3}
PACK_PARALLEL=${PACK_PARALLEL:-1,4,8}
PACK_SET=${PACK_SET:-"--set total_steps=150 --set batch_size=32 --set model.dtype=bfloat16 --set eval_every_steps=150 --set log_every_steps=50"}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
elapsed() { echo $(( $(date +%s) - START )); }
left() { echo $(( DEADLINE - $(elapsed) )); }

WHEELS=${WHEELS-.whl}  # empty: use what is installed (a CPU check of this script)
if [ -n "$WHEELS" ] && [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader | tee "$OUT/device.txt"
$PY -c "import jax, torch; print('jax', jax.__version__, jax.devices(), '| torch', torch.__version__)" \
    | tee -a "$OUT/device.txt"
nproc | sed 's/^/cores: /' | tee -a "$OUT/device.txt"

count=$(echo $PARTS | wc -w); done_parts=0
share() {  # seconds for the next part: what is left, split over the parts still to run
  echo $(( $(left) / (count - done_parts) ))
}
DSB="configs/resnet_unet.py:dsb2018 --config.data.path=$DATA --config.data.data_dir=${DATA_DIR:-}"

for part in $PARTS; do
  budget=$(share)
  echo "== $part: ${budget} s (at $(elapsed) s)"
  if [ "$budget" -le 5 ]; then echo "no time left for $part"; done_parts=$((done_parts + 1)); continue; fi
  case $part in
    speed)
      timeout "$budget" $PY -m benchmarks.gpu_speed --models "$SPEED_MODELS" --impls "$SPEED_IMPLS" \
          --size "$SIZE" --train_batches "$TRAIN_BATCHES" --infer_batches "$INFER_BATCHES" \
          --steps "$SPEED_STEPS" --deadline_s $((budget - 20)) --json "$OUT/gpu_speed.json" \
          2>&1 | tee "$OUT/gpu_speed.log" ;;
    e2e)
      half=$((budget / 2))
      for where in host device; do
        workdir=/tmp/e2e_$where; rm -rf "$workdir"
        on_device=$([ $where = device ] && echo True || echo False)  # and the decoded cache
        timeout "$half" $PY -m segjax.train --config $DSB --config.model.encoder="$E2E_ENCODER" \
            --config.model.dtype=bfloat16 --config.batch_size="$E2E_BATCH" \
            --config.data.image_size="$SIZE,$SIZE" --config.total_steps="$E2E_STEPS" \
            --config.optimizer.warmup_steps=1 --config.log_every_steps=$((E2E_STEPS / 6)) \
            --config.eval_every_steps=1000000 --config.checkpoint_every_steps=1000000 \
            --config.data.num_workers="$E2E_WORKERS" --config.data.augment.on_device=$on_device \
            --config.data.cache=$on_device \
            --config.eval_split=validation --workdir "$workdir" > "$OUT/e2e_$where.log" 2>&1
        echo "exit $? ($where)"; grep "data wait" "$OUT/e2e_$where.log" | tail -3
        cp "$workdir/metrics.jsonl" "$OUT/e2e_${where}_metrics.jsonl" 2>/dev/null
      done ;;
    pipeline)
      timeout "$budget" $PY -m benchmarks.pipeline_speed --config $DSB \
          --config.data.image_size="$SIZE,$SIZE" --threads "$PIPE_THREADS" \
          --workers "$PIPE_WORKERS" --cache "$PIPE_CACHE" --seconds "$PIPE_SECONDS" \
          --batch "$E2E_BATCH" \
          --json "$OUT/pipeline_gpu_host.json" 2>&1 | tee "$OUT/pipeline.log" ;;
    packing)
      timeout "$budget" $PY -m benchmarks.sweep_packing --config configs/resnet_unet.py:dsb2018 \
          --set data.path="$DATA" --set data.data_dir="$DATA_DIR" $PACK_SET --parallel "$PACK_PARALLEL" \
          --json "$OUT/sweep_packing.json" 2>&1 | tee "$OUT/packing.log" ;;
    *) echo "unknown part $part"; exit 2 ;;
  esac
  done_parts=$((done_parts + 1))
done
echo "done at $(elapsed) s"; ls -la "$OUT"
