#!/usr/bin/env bash
# GPU machine driver for benchmarks/gpu_train_throughput.py (README, "GPU training"). Run from the
# repo root after `python benchmarks/gpu_train_throughput.py prepare` here, with data/gold,
# data/split/classifier, .bench and (where the GPU image lacks them) wheels in .whl carried over.
# Alternates plain-script and train-stage runs (2 each), then one accelerate-launched train stage.
set -uo pipefail
OUT=${OUT:-/tmp/bench-out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ENC=${ENC:-/tmp/encoder}; EPOCHS=${EPOCHS:-2}; REPEATS=${REPEATS:-2}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import torch, transformers, pydantic; print("torch", torch.__version__, "transformers", transformers.__version__)' | tee -a "$OUT/gpu.txt" || exit 1
python3 benchmarks/gpu_train_throughput.py init --bench .bench --out "$ENC" || exit 1
for r in $(seq 1 "$REPEATS"); do
  s=$EPOCHREALTIME
  python3 benchmarks/gpu_train_throughput.py plain --model "$ENC" --gold data/gold --epochs "$EPOCHS" ${PLAIN_FLAGS:-} --metrics "$OUT/plain_$r.json" 2>&1 | grep -v "it/s\]" | tail -3
  echo "plain run $r wall $(awk "BEGIN{print $EPOCHREALTIME - $s}") s"
  s=$EPOCHREALTIME
  python3 -m synthllm.stages.train --params .bench/params.yaml --regime gold_only --gold data/gold \
    --out /tmp/stage-model --metrics "$OUT/stage_$r.json" 2>&1 | grep -v "it/s\]" | tail -3
  echo "stage run $r wall $(awk "BEGIN{print $EPOCHREALTIME - $s}") s"; cat "$OUT/stage_$r.json"; echo
done
s=$EPOCHREALTIME
accelerate launch --num_processes 1 --num_machines 1 --mixed_precision ${ACC_PRECISION:-bf16} --dynamo_backend no \
  -m synthllm.stages.train --params .bench/params.yaml --regime warmup --gold data/gold \
  --synthetic data/split/classifier --out /tmp/accelerate-model --metrics "$OUT/accelerate_warmup.json" 2>&1 | grep -v "it/s\]" | tail -5
echo "accelerate warmup wall $(awk "BEGIN{print $EPOCHREALTIME - $s}") s"; cat "$OUT/accelerate_warmup.json"
echo
python3 - "$OUT" <<'PY'
import json, sys, pathlib, statistics as st
out = pathlib.Path(sys.argv[1])
plain = [json.loads(p.read_text())["samples_per_second"] for p in sorted(out.glob("plain_*.json"))]
stage = [ph["samples_per_second"] for p in sorted(out.glob("stage_*.json"))
         for s in json.loads(p.read_text())["seeds"].values() for ph in s["phases"]]
if plain and stage:
    print(f"plain HF Trainer samples/s: {plain}  train stage samples/s: {stage}")
    print(f"ratio stage/plain (median): {st.median(stage) / st.median(plain):.3f}")
PY
