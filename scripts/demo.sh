#!/usr/bin/env bash
# `make demo`: the most useful end-to-end run that exists today. It simulates the default
# datacenter host and shows its guests' histograms and cold memory (table + PNG), replays real
# Bitbrains demand in the simulator, evaluates every reference policy on both (table + HTML
# report), parses real working-set histograms from every kind of source, and summarises the
# bundled Bitbrains slice (importing all of it when the shared data set is beside the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
WSRL=.venv/bin/wsrl
SHARED=${WSRL_BITBRAINS:-../shared/data/bitbrains-rnd/memory.parquet}
OUT=out/demo
rm -rf "$OUT"
mkdir -p "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "The scenario library"
$WSRL scenario list

step "A simulated datacenter host: 16 guests for 6 hours at their provisioned size"
$WSRL sim --scenario datacenter --duration 6h --out "$OUT/sim-datacenter" --plot "$OUT/sim-datacenter.png"
$WSRL trace validate "$OUT/sim-datacenter"

step "Real Bitbrains demand replayed in the simulator (8 VMs, first day), summary as JSON"
$WSRL sim --scenario bitbrains-replay --duration 24h --out "$OUT/sim-bitbrains" \
    --plot "$OUT/sim-bitbrains.png" --json | head -n 22

SHIPPED=trained/ppo-overcommit
# git keeps no file modes; the loader refuses group-writable model files (docs/security.md).
chmod go-w "$SHIPPED/model.onnx" "$SHIPPED/manifest.json"
step "The shipped learned policy ($SHIPPED, ONNX) beside every reference policy on the default datacenter and on real Bitbrains demand (2 h each)"
$WSRL eval --scenario datacenter --traces envs/traces/bitbrains-sample --duration 2h --executor process \
    --policy "$SHIPPED" --policy static --policy senpai --policy senpai-reclaim --policy far-memory \
    --policy wmo --policy vpa --policy esx-idle-tax --policy oracle --report "$OUT/eval"

step "A real MGLRU histogram captured from a QEMU guest (lru_gen, one table per memcg and node)"
capture=$(ls tests/data/lru_gen/real-lru_gen-*.txt 2>/dev/null | head -n 1 || true)
capture=${capture:-tests/data/lru_gen/many_memcgs_two_nodes.txt}
$WSRL histogram parse --format lru_gen "$capture"

step "The working-set reporting example from the kernel patch docs, as JSON"
$WSRL histogram parse --format wsr tests/data/wsr/memcg_page_age_documented.txt --json | head -n 20

step "The bundled slice of the real Bitbrains VM history"
$WSRL trace info envs/traces/bitbrains-sample
$WSRL trace validate envs/traces/bitbrains-sample

if [[ -f "$SHARED" ]]; then
    step "Importing the whole shared Bitbrains history ($SHARED)"
    $WSRL trace import bitbrains "$SHARED" --out "$OUT/bitbrains"
    $WSRL trace info "$OUT/bitbrains"
else
    step "Skipping the full Bitbrains import: $SHARED not found (set WSRL_BITBRAINS)"
fi
printf '\nDone. Outputs are in %s: pictures %s/sim-*.png, evaluation report %s/eval/index.html.\n' "$OUT" "$OUT" "$OUT"
