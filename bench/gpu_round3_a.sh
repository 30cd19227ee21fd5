#!/usr/bin/env bash
# One device call (<= 600 s) for issues 15 and 17, each part bounded so a slow one cannot starve
# the rest, each writing under $OUT as it goes:
#   1. issue 15's techniques target: LoRA r16 all-linear, 8 x 1024, no checkpointing, against the
#      plain transformers + peft loop (speed-sensitive: runs alone on the GPU);
#   2. checkpointing at micro-batch 4 against no checkpointing at micro-batch 1 (the same
#      effective batch): which is faster, for the ladder's order (speed-sensitive: alone);
#   3. issue 17's run of each new method, and issue 15's --data estimate on a long-tailed set,
#      side by side (memory only; each process reads its own allocator's peak).
# Run from the repository root: bash bench/gpu_round3_a.sh
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
cd bench || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"

timeout 270 python3 techniques.py --shapes llama-3.2-1b:8x1024,qwen2.5-0.5b:8x1024 --steps 50 \
  --variants train,fused_liger,fused_liger_8bit --out "$OUT/techniques.jsonl" > "$OUT/techniques.log" 2>&1

for shape in "smollm2-1.7b 2048" "qwen2.5-0.5b 512"; do
  set -- $shape
  timeout 60 python3 gpu_methods.py --model "$1" --seq "$2" --batch 4 --ckpt --steps 12 --only lora \
    --out "$OUT/ckpt_$1_b4_ckpt.md" > /dev/null 2>> "$OUT/ckpt.log"
  timeout 60 python3 gpu_methods.py --model "$1" --seq "$2" --batch 1 --steps 24 --only lora \
    --out "$OUT/ckpt_$1_b1_plain.md" > /dev/null 2>> "$OUT/ckpt.log"
done

timeout 190 python3 gpu_methods.py --model qwen2.5-0.5b --batch 4 --seq 512 --steps 6 \
  --only oft,lokr,loha,ia3,lorafa,miss,c3a,shira,pissa,olora --out "$OUT/methods.md" > "$OUT/methods.log" 2>&1 &
timeout 190 python3 data_peak.py --rows 200 --out "$OUT/data_peak.jsonl" > "$OUT/data_peak.log" 2>&1 &
wait
echo done
