#!/usr/bin/env bash
# The quick-start demo: the study recipe recipes/demo.toml (train-cvae → generate → shuffle →
# pair → truth → evaluate, two dataset replicates × two evaluator seeds), then a dataset card and
# a picture of replicate 0's entangled file.
#
# Usage: scripts/demo.sh [OUT_DIR]   (sources from MMGEN_DATA_DIR; `mmgen` on the PATH)
set -euo pipefail
out="${1:-demo}"
mmgen study run recipes/demo.toml --out "$out"
entangled=$(ls "$out"/jobs/generate/*-r0/e.h5)
mmgen card "$entangled"
mmgen inspect "$entangled" --out "$out/mnist-e.png" > "$out/mnist-e.txt"
mmgen verify "$entangled"
echo "Done: $out/report.md (the replicated, truth-calibrated verdict); card and picture of"
echo "replicate 0's MNIST-E: $entangled.card.md, $out/mnist-e.png"
