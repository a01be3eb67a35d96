#!/usr/bin/env bash
# `make bitbrains-split`: the VM-disjoint, time-forward split of the shared Bitbrains history that
# learned policies train on (out/bitbrains/train) and are judged on (out/bitbrains/holdout).
# Idempotent: a finished split (both sides with their split.json) is left alone; an interrupted
# one (a side without split.json, or an import without its import-report.json) is redone.
# WSRL_BITBRAINS overrides the data set's path; WSRL_HOLDOUT_FRAC and WSRL_CUTOFF_FRAC the split.
set -euo pipefail
cd "$(dirname "$0")/.."
WSRL=.venv/bin/wsrl
SHARED=${WSRL_BITBRAINS:-../shared/data/bitbrains-rnd/memory.parquet}
HOLDOUT_FRAC=${WSRL_HOLDOUT_FRAC:-0.2}
CUTOFF_FRAC=${WSRL_CUTOFF_FRAC:-0.7}
OUT=out/bitbrains
ALL=$OUT/all
TRAIN=$OUT/train
HOLDOUT=$OUT/holdout

if [[ -f "$TRAIN/split.json" && -f "$HOLDOUT/split.json" ]]; then
    echo "bitbrains split already there: $TRAIN, $HOLDOUT (remove $OUT to redo it)"
    exit 0
fi

if [[ ! -x "$WSRL" ]]; then
    echo "bitbrains_split: $WSRL not found; run 'make setup' first" >&2
    exit 1
fi

if [[ ! -f "$ALL/trace.json" || ! -f "$ALL/import-report.json" ]]; then
    if [[ ! -f "$SHARED" ]]; then
        echo "bitbrains_split: the shared Bitbrains data set is missing: $SHARED not found" \
            "(set WSRL_BITBRAINS to its memory.parquet)" >&2
        exit 1
    fi
    rm -rf "$ALL"  # an interrupted import (no import-report.json) or nothing
    echo "importing $SHARED into $ALL"
    $WSRL trace import bitbrains "$SHARED" --out "$ALL"
fi

rm -rf "$TRAIN" "$HOLDOUT"  # an interrupted split (no split.json on one side) or nothing
$WSRL trace split "$ALL" --train "$TRAIN" --holdout "$HOLDOUT" \
    --holdout-frac "$HOLDOUT_FRAC" --cutoff-frac "$CUTOFF_FRAC"
