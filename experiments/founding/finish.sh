#!/bin/bash
# After the grid's last member: its speed phase, the deploy table, the report and its rebuild
# check. Run from the repository root on a quiet machine (nothing else running: the speed
# phase and the latencies are timed), with the grid's workdir (members' records, and speed.json
# written there):
#     experiments/founding/finish.sh ../wt_grid/runs/founding_grid
set -euo pipefail
WORKDIR=${1:?usage: experiments/founding/finish.sh GRID_WORKDIR}
GRID=experiments/founding/grid
MODELS="unet_resnet34 unet_ghostnet100 unet_ghostnet100_ghostdecoder unet_mobilenetv2
        unet_efficientnetlite0 unetpp_resnet34 unetpp_ghostnet100 unet_paper unetpp_paper"

# 1. the runner's speed phase, into the records: only once every member has finished, and only
# where a member's records lack speed.json (the runner is not called when none does: it would
# refuse the members trained on the lent GPU, whose records keep their resized-data path)
unfinished=$(python -c "
import json, os, sys
from segjax.experiments.spec import load_experiment
for m in load_experiment('experiments/founding.py:grid').members:
    path = os.path.join(sys.argv[1], m.name, 'member.json')
    if not (os.path.exists(path) and json.load(open(path)).get('finished')):
        print(m.name)" "$WORKDIR")
if [ -n "$unfinished" ]; then
  echo "error: $WORKDIR: not finished: $(echo $unfinished); run the grid first" >&2
  exit 1
fi
if ls "$GRID"/members/*/ | grep -q . && [ -n "$(for m in "$GRID"/members/*/; do
    [ -f "$m/speed.json" ] || echo "$m"; done)" ]; then
  python -m segjax.experiments.run experiments/founding.py:grid --workdir "$WORKDIR"
  for member in "$GRID"/members/*/; do
    cp "$WORKDIR/$(basename "$member")/speed.json" "$member"
  done
fi
# 2. latency and file sizes at 256x256, batch 1, each model built from its seed 0's records
configs=$(for m in $MODELS; do printf '%s=%s/members/%s_seed0,' "$m" "$GRID" "$m"; done)
python -m benchmarks.deploy --configs "${configs%,}" --batches 1 --json "$GRID/deploy.json"
# 3. the report from the committed records, then again from a copy: identical files
python -m segjax.experiments.report experiments/founding.py:grid --workdir "$GRID/members" --out "$GRID"
rebuild=$(mktemp -d)
mkdir "$rebuild/members" "$rebuild/out"
cp -r "$GRID"/members/* "$rebuild/members/"
cp "$GRID/int8.json" "$GRID/deploy.json" "$rebuild/out/"
python -m segjax.experiments.report experiments/founding.py:grid --workdir "$rebuild/members" \
    --out "$rebuild/out" > /dev/null
for f in answer.md paired.md convergence.md results.md results.csv seeds.csv; do
  cmp "$GRID/$f" "$rebuild/out/$f" && echo "cmp $f: identical"
done
