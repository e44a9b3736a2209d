#!/usr/bin/env bash
# Train every config of one schedule sweep side by side and collect their histories into one JSON.
#
#   bash benchmarks/schedules.sh benchmarks/configs/schedules/sweep1 ../shared/data/los_loop gpu \
#       benchmarks/results/gpu_schedules/sweep1.json
#   python benchmarks/schedules.py     # rebuilds benchmarks/results/gpu_schedules.md from the JSONs
#
# Each run: `stmgt train --config CFG --data DATA --accelerator ACC --threads 2` (validation only: nothing
# reads the test split). On a machine without the package's dependencies, WHEELS=folder installs wheels
# from that folder first (the lent GPU machine has no package index).
set -u
SWEEP=$1; DATA=$2; ACC=${3:-cpu}; JSON=${4:-/dev/stdout}
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-} || exit 1
fi
export PYTHONPATH=$HERE/../src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
WORK=$(mktemp -d); mkdir -p "$WORK/runs" "$WORK/logs"
python3 -c "import torch, stmgt; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
pids=""
for c in "$SWEEP"/*.yaml; do n=$(basename "$c" .yaml)
  timeout "${RUN_LIMIT:-3600}" python3 -m stmgt train --config "$c" --data "$DATA" --accelerator "$ACC" --threads 2 \
    --out "$WORK/runs/$n" ${EXTRA:-} > "$WORK/logs/$n.log" 2>&1 &
  pids="$pids $!"
done
( while sleep 60; do for f in "$WORK"/logs/*.log; do echo "$(basename "$f"): $(tail -c 300 "$f" | tail -n1)"; done; done ) &
mon=$!
wait $pids; kill $mon
python3 "$HERE/schedules.py" collect "$WORK/runs" "$JSON"
for f in "$WORK"/logs/*.log; do echo "== $f"; tail -n 2 "$f"; done
