#!/usr/bin/env bash
# The whole mmgen pipeline, end to end:
#   train-cvae (MNIST, Fashion-MNIST) → generate (MNIST-E, sampled observations) → shuffle
#   (MNIST-ME) → pair (naive) → truth (E, ME) → inspect → evaluate (E vs ME vs naive), leaving
#   checkpoints, datasets, their ground truth, report and figures.
#
# Usage: scripts/pipeline.sh OUT_DIR   (sources from MMGEN_DATA_DIR; `mmgen` on the PATH)
# The budget comes from the environment; the defaults are the quick-start demo's (a few minutes
# on a 2-core CPU). docs/results.md gives the values of the full run.
set -euo pipefail
out="${1:-demo}"
: "${SEED:=0}"                 # the CVAEs, the generated file, the shuffle and the pairing
: "${SEEDS:=0 1}"              # evaluate: every model on every file with each seed (the verdict)
: "${MODELS:=jmvae,jmvae-zero,jmvae-kl,tvae,m2vae}"  # evaluate: comma list of registry names
: "${CVAE_EPOCHS:=2}"          # reference: 100
: "${CVAE_LIMIT=10000}"        # train/test examples per source; "" = all
: "${N_TRAIN:=3000}"           # reference: 60000
: "${N_TEST:=1000}"            # reference: 10000
: "${PAIR_LIMIT=3000}"         # real examples per source split read for the naive pairing; "" = all
: "${MM_EPOCHS:=5}"            # epochs of every multi-modal VAE
: "${K:=100}"                  # importance samples (reference: 1000)
: "${PRIOR_SAMPLES:=1000}"     # reference: 5000
: "${JOINT_SAMPLES:=2000}"     # reference: 10000
: "${CLASSIFIER_EPOCHS:=1}"    # real-data classifiers, cached across runs
: "${MM_LIMIT=}"               # train and test tuples per file used by evaluate; "" = all
: "${TEST_LIMIT=1000}"         # test tuples per file measured (N·K decodes); "" = all
: "${DECODE:=sample}"          # sample: Bernoulli observations (the evidence); mean: the paper's
: "${TRUTH_POINTS:=32}"        # quadrature cells per axis of the ground truth (check: 2×)
mkdir -p "$out"

limit_flag() { if [ -n "$2" ]; then echo "$1 $2"; fi; }

for source in mnist fashion-mnist; do
    if [ ! -f "$out/cvae-$source/weights.pt" ]; then
        # shellcheck disable=SC2046
        mmgen train-cvae --source "$source" --out "$out/cvae-$source" --epochs "$CVAE_EPOCHS" \
            --seed "$SEED" $(limit_flag --limit "$CVAE_LIMIT")
    fi
done

mmgen generate --cvae "$out/cvae-mnist" --cvae "$out/cvae-fashion-mnist" \
    --out "$out/mnist-e.h5" --n-train "$N_TRAIN" --n-test "$N_TEST" --seed "$SEED" \
    --decode "$DECODE" --overwrite
mmgen shuffle "$out/mnist-e.h5" --out "$out/mnist-me.h5" --seed "$SEED" --overwrite
for name in mnist-e mnist-me; do  # the true log p(x) and shared information, beside each file
    mmgen truth "$out/$name.h5" --points "$TRUTH_POINTS" --device auto --recompute \
        > "$out/$name-truth.txt"
done
# shellcheck disable=SC2046
mmgen pair --source mnist --source fashion-mnist --out "$out/m-mnist.h5" --seed "$SEED" \
    --overwrite $(limit_flag --limit "$PAIR_LIMIT")

mmgen inspect "$out/mnist-e.h5" --out "$out/mnist-e.png" \
    --cvae "$out/cvae-mnist" --cvae "$out/cvae-fashion-mnist" > "$out/mnist-e.txt"
for name in mnist-me m-mnist; do
    mmgen inspect "$out/$name.h5" --out "$out/$name.png" > "$out/$name.txt"
done

# shellcheck disable=SC2046,SC2086
mmgen evaluate "$out/mnist-e.h5" "$out/mnist-me.h5" "$out/m-mnist.h5" \
    --models "$MODELS" --epochs "$MM_EPOCHS" --k "$K" \
    --prior-samples "$PRIOR_SAMPLES" --joint-samples "$JOINT_SAMPLES" \
    --classifier-epochs "$CLASSIFIER_EPOCHS" --seeds $SEEDS --out "$out/report" --overwrite \
    $(limit_flag --limit "$MM_LIMIT") $(limit_flag --test-limit "$TEST_LIMIT")

echo "Done: $out/report/report.md, figures in $out/ (inspect) and $out/report/ (evaluate)"
