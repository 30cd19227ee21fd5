#!/usr/bin/env bash
# The device calls (<= 600 s each) owed to issues 13, 15 and 17; each part is bounded so a slow
# one cannot starve the rest, and each writes under $OUT as it goes.
#   bash bench/gpu_round3.sh fits    issue 13's fits round 3 (advice trained on capped cards, with
#                                    the techniques available), beside issue 15's --data estimate
#                                    on a long-tailed set (memory only: each process reads its own
#                                    allocator's peak, so sharing the card does not change them)
#   bash bench/gpu_round3.sh speed   issue 15's techniques target against the plain transformers +
#                                    peft loop, then checkpointing all, half or none of the blocks
#                                    (speed: alone on the GPU), then issue 17's run of each new method
#   bash bench/gpu_round3.sh owed    what those two calls did not reach (see the case for the list)
#   bash bench/gpu_round3.sh owed-short  the memory-only parts of owed side by side, for a short call
#   bash bench/gpu_round3.sh gemma2  the eager-attention term (Gemma 2 keeps its score matrices) on
#                                    the advice it changed, few blocks checkpointed, beside the
#                                    rsLoRA trace owed since round 3 and the three methods not yet
#                                    on a GPU; then Qwen2.5-0.5B's techniques speed run, alone
#   bash bench/gpu_round3.sh gemma2-eager  the Gemma 2 advice again, now that the trainer loads Gemma 2
#                                    with eager attention on every transformers (the device's ran it on
#                                    SDPA, without the soft-cap, and the `gemma2` call read 15-68 % below)
#   bash bench/gpu_round3.sh trace   what is alive at the peak of round 3's rsLoRA cases (memory_trace.py)
#   bash bench/gpu_round3.sh round5  owed after round 4: the CUDA block audit (held-out check of the
#                                    eager-backward GPU term and the DoRA/gate_up terms), Phi-3.5's
#                                    GPU-side gap traced at round 1's shape, today's top advice trained
#                                    on capped cards where the ranking changed (MiSS, OFT, C3A now lead
#                                    quality ties), then the speed of the methods only the study timed
# Run from the repository root.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
# The device returns only a few files of a call's output: everything goes back as one archive, even
# when the call's timeout stops this script (TERM runs the EXIT trap).
bundle() { (cd "$OUT" && ls | grep -v '^results.tgz$' | tar czf results.tgz --remove-files -T -); }
trap bundle EXIT
trap 'exit 143' TERM
cd bench || exit 1
# BUDGET_S: the seconds this call may take in all; a part gets at most what is left of it
DEADLINE=$((SECONDS + ${BUDGET_S:-570}))
part() { local left=$((DEADLINE - SECONDS - 15)); [ "$left" -lt "$1" ] && echo $((left > 1 ? left : 1)) || echo "$1"; }
# round 3's rsLoRA runs were 1-9 % above the estimate's tensors (allocated, not reserved): what is
# alive at the peak with the techniques and partial checkpointing on, against the estimate's terms
trace_cases() {
  for c in gemma-3-4b:rslora:4:4096:ckpt31:fused qwen2.5-7b:rslora:4:2048:ckpt27:fused smollm2-1.7b:rslora:4:2048:ckpt19:fused \
      smollm2-1.7b:rslora:4:2048:ckpt19 smollm2-1.7b:rslora:4:2048:ckpt:fused; do
    timeout 110 python3 memory_trace.py --expandable --case "$c" --out "$OUT/trace.jsonl" >> "$OUT/trace.log" 2>&1
    python3 memory_trace.py --table "$OUT/trace.jsonl" > "$OUT/trace.md" 2>&1
  done
}
export -f trace_cases
export OUT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"

case "${1:-}" in
fits)
  # data_peak's runs are uncapped (up to ~55 GiB): beside the fits only on a card with room for both
  mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
  timeout 540 python3 fits.py --round 3 --parallel-gib 70 --out "$OUT/fits_round3.jsonl" > "$OUT/fits.log" 2>&1 &
  if [ "$mib" -gt 130000 ]; then
    timeout 400 python3 data_peak.py --rows 200 --out "$OUT/data_peak.jsonl" > "$OUT/data_peak.log" 2>&1 &
  fi
  wait
  python3 fits.py --table "$OUT/fits_round3.jsonl" > "$OUT/fits_round3.md" 2>&1
  ;;
speed)
  timeout 270 python3 techniques.py --shapes llama-3.2-1b:8x1024,qwen2.5-0.5b:8x1024 --steps 50 \
    --variants train,fused_liger,fused_liger_8bit --out "$OUT/techniques.jsonl" > "$OUT/techniques.log" 2>&1
  # partial checkpointing: all 24 blocks, 12, none (peak against the estimate, tokens/s)
  for layers in 0 12; do
    timeout 60 python3 gpu_methods.py --model smollm2-1.7b --seq 2048 --batch 4 --ckpt --ckpt-layers $layers \
      --steps 12 --only lora --out "$OUT/ckpt_smollm2-1.7b_b4_ckpt$layers.md" > /dev/null 2>> "$OUT/ckpt.log"
  done
  timeout 60 python3 gpu_methods.py --model smollm2-1.7b --seq 2048 --batch 4 --steps 12 --only lora \
    --out "$OUT/ckpt_smollm2-1.7b_b4_none.md" > /dev/null 2>> "$OUT/ckpt.log"
  timeout 180 python3 gpu_methods.py --model qwen2.5-0.5b --batch 4 --seq 512 --steps 6 \
    --only oft,lokr,loha,ia3,lorafa,miss,c3a,shira,pissa,olora --out "$OUT/methods.md" > "$OUT/methods.log" 2>&1
  ;;
owed)
  # what the first two calls did not reach (bench/results/h100_*round3*): round 3's cases that never
  # ran, issue 15's --data estimate and Qwen2.5-0.5B's techniques run, the six methods not yet on a GPU
  timeout 190 python3 fits.py --round 3 --cases 5-8 --parallel-gib 40 --out "$OUT/fits_round3_rest.jsonl" \
    > "$OUT/fits.log" 2>&1 &
  timeout 190 python3 data_peak.py --rows 200 --vram 36 --out "$OUT/data_peak.jsonl" > "$OUT/data_peak.log" 2>&1 &
  # the allocator traces (memory only) beside them where the card has room for all three
  mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
  if [ "$mib" -gt 130000 ]; then timeout 190 bash -c trace_cases & fi
  wait
  timeout $(part 150) python3 gpu_methods.py --model qwen2.5-0.5b --batch 4 --seq 512 --steps 6 \
    --only ia3,miss,c3a,lorafa,pissa,olora --out "$OUT/methods.md" > "$OUT/methods.log" 2>&1
  timeout $(part 140) python3 techniques.py --shapes qwen2.5-0.5b:8x1024 --steps 50 --variants train,fused_liger \
    --out "$OUT/techniques.jsonl" > "$OUT/techniques.log" 2>&1
  ;;
owed-short)
  # what is left of `owed` when refused starts left a short call: all memory-only, side by side on
  # one card (28 + 36 GiB capped, the methods' runs about 10 GiB), the fits cases held out for the
  # backward-transient term first
  timeout $(part 200) python3 fits.py --round 3 --cases 5-8 --parallel-gib 28 --out "$OUT/fits_round3_rest.jsonl" \
    > "$OUT/fits.log" 2>&1 &
  timeout $(part 200) python3 data_peak.py --rows 200 --vram 36 --out "$OUT/data_peak.jsonl" > "$OUT/data_peak.log" 2>&1 &
  timeout $(part 200) python3 gpu_methods.py --model qwen2.5-0.5b --batch 4 --seq 512 --steps 6 \
    --only ia3,miss,c3a,lorafa,pissa,olora --out "$OUT/methods.md" > "$OUT/methods.log" 2>&1 &
  wait
  python3 fits.py --table "$OUT/fits_round3_rest.jsonl" > "$OUT/fits_round3_rest.md" 2>&1
  ;;
gemma2)
  timeout $(part 330) python3 fits.py --top 1 --case gemma-2-2b:24:2048 --case gemma-2-2b:12:1024 \
    --case gemma-2-2b:16:4096 --case gemma-2-2b:32:4096 --parallel-gib 40 --out "$OUT/fits_gemma2.jsonl" \
    > "$OUT/fits.log" 2>&1 &
  timeout $(part 330) bash -c 'for c in gemma-2-2b:lora:1:4096:ckpt22:fused qwen3-0.6b:rslora:4:4096:ckpt22:fused; do
      python3 memory_trace.py --expandable --case "$c" --out "$OUT/trace.jsonl" >> "$OUT/trace.log" 2>&1
      python3 memory_trace.py --table "$OUT/trace.jsonl" > "$OUT/trace.md" 2>&1; done' &
  timeout $(part 330) python3 gpu_methods.py --model qwen2.5-0.5b --batch 4 --seq 512 --steps 6 \
    --only lorafa,pissa,olora --out "$OUT/methods.md" > "$OUT/methods.log" 2>&1 &
  # issue 15's --data estimate (capped at 36 GiB of advice) where the card has room for it too
  mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
  if [ "$mib" -gt 130000 ]; then
    timeout $(part 330) python3 data_peak.py --rows 200 --vram 36 --out "$OUT/data_peak.jsonl" > "$OUT/data_peak.log" 2>&1 &
  fi
  wait
  python3 fits.py --table "$OUT/fits_gemma2.jsonl" > "$OUT/fits_gemma2.md" 2>&1
  timeout $(part 150) python3 techniques.py --shapes qwen2.5-0.5b:8x1024 --steps 50 --variants train,fused_liger \
    --out "$OUT/techniques.jsonl" > "$OUT/techniques.log" 2>&1
  ;;
gemma2-eager)
  python3 -c "import transformers, peft; from transformers.models.gemma2 import modeling_gemma2 as m; \
print('transformers', transformers.__version__, 'peft', peft.__version__, 'gemma2 sdpa', m.Gemma2PreTrainedModel._supports_sdpa)" \
    > "$OUT/versions.txt" 2>&1
  timeout $(part 300) python3 fits.py --top 1 --case gemma-2-2b:24:2048 --case gemma-2-2b:16:4096 \
    --case gemma-2-2b:32:4096 --case gemma-2-2b:24:8192 --parallel-gib 74 --out "$OUT/fits_gemma2_eager.jsonl" \
    > "$OUT/fits.log" 2>&1
  python3 fits.py --table "$OUT/fits_gemma2_eager.jsonl" > "$OUT/fits_gemma2_eager.md" 2>&1
  ;;
trace)
  timeout 560 bash -c trace_cases
  ;;
round5)
  timeout $(part 300) python3 backward_audit.py --cuda --out "$OUT/cuda_backward_audit.jsonl" \
    --cases gemma-2-2b:lora:4096,gemma-2-2b:lora:8192,gemma-2-9b:lora:4096,qwen3-0.6b:lora:4096,phi-3.5-mini:lora:4096,llama-3.2-1b:dora:4096,phi-3.5-mini:dora:4096 \
    > "$OUT/cuda_backward_audit.log" 2>&1 &
  timeout $(part 300) bash -c 'for c in phi-3.5-mini:rslora:4:1024:ckpt phi-3.5-mini:rslora:4:4096:ckpt; do
      python3 memory_trace.py --expandable --case "$c" --out "$OUT/trace.jsonl" >> "$OUT/trace.log" 2>&1
      python3 memory_trace.py --table "$OUT/trace.jsonl" > "$OUT/trace.md" 2>&1; done' &
  timeout $(part 300) python3 fits.py --top 2 --case llama-3.1-8b:24:1024 --case qwen2.5-7b:24:1024 \
    --case phi-3.5-mini:16:1024 --parallel-gib 40 --out "$OUT/fits_round5.jsonl" > "$OUT/fits.log" 2>&1 &
  wait
  python3 fits.py --table "$OUT/fits_round5.jsonl" > "$OUT/fits_round5.md" 2>&1
  timeout $(part 240) python3 gpu_methods.py --model qwen2.5-0.5b --batch 4 --seq 1024 --steps 12 \
    --only lora,oft,lokr,loha,ia3,miss,c3a,shira,lorafa --out "$OUT/methods_speed.md" > "$OUT/methods.log" 2>&1
  ;;
*)
  echo "usage: bash bench/gpu_round3.sh fits|speed|owed|owed-short|gemma2|gemma2-eager|trace|round5" >&2
  exit 2
  ;;
esac
echo done
