#!/usr/bin/env bash
# The quick-start demo: the whole mmgen pipeline at a small budget (a few minutes on a CPU).
#   train-cvae (MNIST, Fashion-MNIST) → generate (MNIST-E) → shuffle (MNIST-ME, naive pairing)
#   → inspect → evaluate (E vs ME vs naive), leaving checkpoints, datasets, report and figures.
# Usage: scripts/demo.sh OUT_DIR   (reads the sources from MMGEN_DATA_DIR)
set -euo pipefail
out="${1:-demo}"
mkdir -p "$out"
seed=0

for source in mnist fashion-mnist; do
    if [ ! -f "$out/cvae-$source/weights.pt" ]; then
        mmgen train-cvae --source "$source" --out "$out/cvae-$source" \
            --epochs 3 --limit 10000 --seed "$seed"
    fi
done

mmgen generate --cvae "$out/cvae-mnist" --cvae "$out/cvae-fashion-mnist" \
    --out "$out/mnist-e.h5" --n-train 5000 --n-test 1000 --seed "$seed" --overwrite
mmgen shuffle "$out/mnist-e.h5" --out "$out/mnist-me.h5" --seed "$seed" --overwrite
mmgen pair --source mnist --source fashion-mnist --out "$out/m-mnist.h5" \
    --limit 6000 --seed "$seed" --overwrite

for name in mnist-e mnist-me m-mnist; do
    mmgen inspect "$out/$name.h5" --out "$out/$name.png" > "$out/$name.txt"
done

mmgen evaluate "$out/mnist-e.h5" "$out/mnist-me.h5" "$out/m-mnist.h5" \
    --models jmvae,jmvae-zero,jmvae-kl,tvae,m2vae --epochs 5 --k 100 --prior-samples 1000 \
    --joint-samples 2000 --classifier-epochs 1 --seed "$seed" --out "$out/report"

echo "Demo done: see $out/report/report.md and the figures in $out/ and $out/report/"
