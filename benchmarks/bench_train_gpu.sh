#!/usr/bin/env bash
# Training throughput on a GPU machine: the figures in trained/ppo-overcommit/README.md ("GPU").
# Usage: bash benchmarks/bench_train_gpu.sh [OUT_DIR]   (needs torch with CUDA; WORKERS defaults to
# the core count). Each line of OUT_DIR/bench_train_gpu.jsonl is one benchmarks/bench_train.py run:
# the same dense hosts stepped in-process and in WORKERS processes, PPO on the CPU and on the GPU.
set -euo pipefail
out=${1:-out/bench-gpu}
mkdir -p "$out"
py=${PYTHON:-python3}
workers=${WORKERS:-$(nproc)}
cpu_threads=${CPU_THREADS:-$(nproc)}
steps=${STEPS:-2621440}
log="$out/bench_train_gpu.jsonl"
: >"$log"
run() { echo "+ bench_train $*" >&2; "$py" benchmarks/bench_train.py --json --n-steps 16 "$@" | tee -a "$log"; }
# 4096 guests (64 dense hosts), 64x64 MLP: CPU learner on all cores, GPU learner, then the env in processes.
run --device cpu --threads "$cpu_threads" --hosts 64 --timesteps $((steps / 2)) --batch-size 16384
run --device cuda --hosts 64 --timesteps "$steps" --batch-size 16384
run --device cuda --hosts 64 --workers "$workers" --timesteps $((steps * 2)) --batch-size 16384
# 16384 guests (256 hosts) in processes, larger batches, small and large networks.
run --device cuda --hosts 256 --workers "$workers" --timesteps $((steps * 4)) --batch-size 65536
run --device cuda --hosts 256 --workers "$workers" --timesteps $((steps * 4)) --batch-size 65536 --net-arch 256,256
