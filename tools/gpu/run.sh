#!/usr/bin/env bash
# The trainer on a GPU machine that has a libtorch and a C++ compiler but no
# Go and no network (README.md, "The trainer on a GPU").
#
#   tools/gpu/run.sh prepare              here, with Go: builds .gpu/carry (binaries
#                                         linked to libtch.so, gzipped; gotch's C layer source)
#   tools/gpu/run.sh run --libtorch DIR   there: builds libtch.so against DIR, then
#                                         the BLSTM benchmark beside PyTorch, one
#                                         homemole train on a generated home and a predict
#   tools/gpu/run.sh all --libtorch DIR   both, on this machine (the CPU test)
#
# run's options:
#   --libtorch DIR  PyTorch's site-packages/torch (the device's is
#                   /opt/torch/.venv/lib/python3.12/site-packages/torch) or /usr (Debian)
#   --device D      cuda (default), cpu, cuda:N or auto
#   --python PY     the Python whose torch is the reference (default: the one
#                   beside --libtorch, else /usr/bin/python3)
#   --small         small sizes, for the CPU test
#   --carry DIR     what prepare wrote (default .gpu/carry)
#   --work DIR      scratch folder (default: a new one under /tmp)
# Results: the last lines ("== summary"); with $OUT set (the device tool), also
# $OUT/summary.txt and $OUT/run.log.
set -euo pipefail

cmd=${1:-}
[ -n "$cmd" ] && shift
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
libtorch="" device="cuda" python="" small=0 carry=.gpu/carry work=""
while [ $# -gt 0 ]; do
  case "$1" in
    --libtorch) libtorch=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --small) small=1; shift ;;
    --carry) carry=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    *) echo "run.sh: unknown option $1 (see the comment at the top of tools/gpu/run.sh)" >&2; exit 2 ;;
  esac
done

t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*"; }

prepare() {
  command -v go >/dev/null || { echo "run.sh prepare needs Go (run it where the repository builds; the device needs none)" >&2; exit 1; }
  stamp "prepare: binaries linked to libtch.so, and gotch's C layer source, into $carry"
  # The relinked gotch copy stays in .gpu/build whatever --carry is: Go's
  # build cache keys cgo packages by their folder, so a fixed one compiles
  # gotch once, not once per temporary folder.
  go run ./tools/gpu prepare --out "$carry" --build "$root/.gpu/build"
}

run() {
  [ -n "$libtorch" ] || { echo "run.sh run needs --libtorch DIR" >&2; exit 2; }
  [ -d "$carry/bin" ] || { echo "run.sh: no $carry/bin: run 'tools/gpu/run.sh prepare' first (where Go is), and carry $carry" >&2; exit 1; }
  if [ -z "$python" ]; then
    python=/usr/bin/python3
    # PyTorch's own folder: site-packages/torch of a venv whose bin/python
    # is the torch these headers came with.
    case "${libtorch%/}" in
      */lib/python3*/site-packages/torch)
        p=$(cd "$libtorch/../../../.." && pwd)/bin/python
        [ -x "$p" ] && python=$p ;;
    esac
  fi
  [ -n "$work" ] || work=$(mktemp -d /tmp/homemole-gpu.XXXXXX)
  mkdir -p "$work/bin"
  work=$(cd "$work" && pwd)
  for f in "$carry"/bin/*.gz; do
    gzip -dc "$f" >"$work/bin/$(basename "$f" .gz)"
    chmod +x "$work/bin/$(basename "$f" .gz)"
  done
  local bin=$work/bin
  stamp "layer: gotch's C layer against $libtorch (nproc $(nproc))"
  "$bin/gpu" layer --libtorch "$libtorch" --src "$carry/libtch-src" --out "$work/layer"
  export LD_LIBRARY_PATH="$work/layer${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

  local batches="64 1024" steps=20 epochs=3 sessions=8 length=15m trainEpochs=10 threads=0
  if [ "$small" = 1 ]; then
    # One libtorch thread on both sides: on a shared machine OpenMP's
    # spinning threads measure the neighbours more than the training.
    batches="16 64" steps=2 epochs=2 sessions=4 length=5m trainEpochs=4 threads=1
  fi
  # A step that fails is counted and the run goes on: one call to a device
  # should bring back every figure it can.
  failures=0
  local results=$work/results.txt
  : >"$results"
  for model in paper default; do
    for batch in $batches; do
      stamp "bench: $model model, batch $batch, on $device"
      if ! "$bin/bench" --device "$device" --models "$model" --batches "$batch" --steps "$steps" --epochs "$epochs" --threads "$threads" | tee -a "$results"; then
        echo "FAILED: bench $model $batch"
        failures=$((failures + 1))
      fi
      local pydev=$device
      [ "$device" = auto ] && pydev=$("$python" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")' 2>/dev/null || echo cpu)
      stamp "bench: the same in PyTorch ($python, device $pydev)"
      if out=$("$python" tools/benchref/blstm_ref.py --device "$pydev" --model "$model" --batch "$batch" --steps "$steps" --epochs "$epochs" --threads "$threads" --infer 2>&1); then
        echo "$out"
        local tr inf
        tr=$(echo "$out" | sed -n 's/^windows\/s \([0-9.]*\).*/\1/p')
        inf=$(echo "$out" | sed -n 's/^inference windows\/s \([0-9.]*\).*/\1/p')
        echo "pytorch model=$model batch=$batch train_windows_per_s=$tr infer_windows_per_s=$inf" >>"$results"
      else
        echo "PyTorch reference failed: $out" | tail -5
        echo "pytorch model=$model batch=$batch train_windows_per_s= infer_windows_per_s=" >>"$results"
      fi
    done
  done

  # train + predict on a generated home: the demo's generator and the real
  # pipeline (embedded NATS and S3) build the dataset, then homemole train
  # on the device, and the same seed on the CPU for the accuracy beside it.
  local hm=$work/homemole
  stamp "dataset: a generated home ($sessions sessions of $length), built through the embedded pipeline"
  "$bin/homemole" demo --home "$hm" --sessions "$sessions" --session-length "$length" --train=false
  local state=$hm/demo/state
  local devices=$device
  [ "$device" != cpu ] && devices="$device cpu"
  for d in $devices; do
    stamp "train: homemole train --device $d"
    if ! "$bin/homemole" train --home "$state" --dataset demo --run "gpu-$d" --device "$d" --epochs "$trainEpochs" --seed 1 \
      --batch "$([ "$small" = 1 ] && echo 16 || echo 64)" 2>&1 | tee "$work/train-$d.log"; then
      echo "FAILED: train on $d"
      failures=$((failures + 1))
    fi
  done
  # The capture of a session the model never saw (both runs hold out the
  # same sessions: same seed).
  local capture
  if capture=$("$bin/gpu" heldout --state "$state" --run "gpu-$device" --captures "$hm/demo/captures") ||
    capture=$("$bin/gpu" heldout --state "$state" --run gpu-cpu --captures "$hm/demo/captures"); then
    stamp "predict: homemole predict --device $device on $capture"
    if ! "$bin/homemole" predict --home "$state" --model "gpu-$device" --in "$capture" --device "$device" --json "$work/predict.json" | tee "$work/predict.txt"; then
      echo "FAILED: predict on $device"
      failures=$((failures + 1))
    fi
  else
    failures=$((failures + 1))
  fi

  "$bin/gpu" summary --results "$results" --state "$state" --campaign "$hm/demo/campaign.yaml" --predict "$work/predict.json" --device "$device" | tee "$work/summary.txt" ||
    failures=$((failures + 1))
  if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
    cp "$work/summary.txt" "$OUT/summary.txt"
    cp "$work/layer/stubbed.txt" "$OUT/stubbed.txt"
  fi
  if [ "$failures" -gt 0 ]; then
    echo "run.sh: $failures step(s) failed (FAILED lines above)" >&2
    return 1
  fi
}

case "$cmd" in
  prepare) prepare ;;
  run)
    if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
      run 2>&1 | tee "$OUT/run.log"
    else
      run
    fi
    ;;
  all) prepare; run ;;
  *) echo "usage: tools/gpu/run.sh prepare | run --libtorch DIR [--device cuda|cpu|auto] [--small] | all --libtorch DIR ..." >&2; exit 2 ;;
esac
stamp "done"
