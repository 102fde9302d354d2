#!/usr/bin/env bash
# The compact recipe end to end (docs/reproduction.md): corpus -> stage I (3 class codebooks +
# the one-codebook baseline) -> stage II (K = 3, and the K = 1 baseline) -> stage III x4 ->
# comparison on the held-out set and training curves. Every step resumes: rerun the same
# command after an interruption and finished stages are skipped (a finished run only re-exports).
#
#   make reproduce-compact                  # or: bash launch/compact_recipe.sh
#   RUNS=/data/compact PY=python bash launch/compact_recipe.sh
#
# Variables: RUNS (workdirs, default runs/compact), PY (python), DATA (corpus, default
# data/corpus; the configs read data/corpus relative to the working directory, so a DATA
# elsewhere is linked there), SHIP=1 copies the stage III export into the package
# (adacode_jax/pretrained/compact_sr_x4) and the report's pictures into docs/.
# On a 2-core machine, independent runs go two at a time, one core each (XLA single-threaded):
# small convolutions do not keep two cores busy, so this trains 1.2-1.3x faster than one by one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
RUNS=${RUNS:-runs/compact}
DATA=${DATA:-data/corpus}
mkdir -p "$RUNS" data
if [[ "$DATA" != "data/corpus" && ! -e data/corpus ]]; then ln -s "$(realpath "$DATA")" data/corpus; fi

if [[ ! -f data/corpus/manifest.csv ]]; then
  "$PY" -m adacode_jax.cli.corpus --output data/corpus --cache data/pkgcache --short-side 512
fi

NCPU=$(nproc)
run() {  # run CORE CONFIG NAME [overrides...]: one training run, logged to $RUNS/NAME.log
  local core=$1 config=$2 name=$3; shift 3
  local pin=() env=()
  if [[ "$core" != "-" && "$NCPU" -le 2 ]] && command -v taskset >/dev/null; then
    pin=(taskset -c "$core"); env=(XLA_FLAGS="--xla_cpu_multi_thread_eigen=false ${XLA_FLAGS:-}")
  fi
  echo "[$(date +%T)] $name: $config -> $RUNS/$name (log $RUNS/$name.log)"
  env "${env[@]}" "${pin[@]}" "$PY" -m adacode_jax.main --config "$config" \
    --workdir "$RUNS/$name" "$@" >> "$RUNS/$name.log" 2>&1 \
    || { echo "$name failed; see $RUNS/$name.log" >&2; return 1; }
}
pair() {  # two independent runs side by side: pair "A args" "B args"
  eval "run 0 $1" & local a=$!
  eval "run 1 $2" & local b=$!
  wait $a && wait $b
}

S1=configs/stage1_codebook.py
pair "$S1:natural,compact s1_natural" "$S1:architecture,compact s1_architecture"
pair "$S1:portrait,compact s1_portrait" "$S1:all,compact s1_all"

E=export/generator
BOOKS="(\"$RUNS/s1_architecture/$E\",\"$RUNS/s1_natural/$E\",\"$RUNS/s1_portrait/$E\")"
pair "configs/stage2_adacode.py:compact s2_k3 --config.train.stage1_checkpoints='$BOOKS'" \
     "configs/stage2_adacode.py:compact,single s2_k1 --config.train.stage1_checkpoints='(\"$RUNS/s1_all/$E\",)'"

run - configs/stage3_sr.py:x4,compact s3_sr_x4 --config.train.stage2_checkpoint="$RUNS/s2_k3/$E"

"$PY" -m adacode_jax.cli.compare --output "$RUNS/compare" --model "adacode_compact=$RUNS/s3_sr_x4/$E"
"$PY" -m adacode_jax.cli.report curves --run "K3: 3 codebooks x 256=$RUNS/s2_k3" --run "K1: 1 codebook x 768=$RUNS/s2_k1" \
  --metric val/psnr --metric val/ssim --metric val/lpips_alex --metric loss/pix \
  --output "$RUNS/curves_stage2.png" --title "stage II reconstruction, held-out crops"
"$PY" -m adacode_jax.cli.report curves --run "x4=$RUNS/s3_sr_x4" \
  --metric val/psnr --metric val/lpips_alex --metric loss/pix --metric loss/lpips \
  --output "$RUNS/curves_stage3.png" --title "stage III x4, held-out crops"
"$PY" -m adacode_jax.cli.report curves --run natural="$RUNS/s1_natural" \
  --run architecture="$RUNS/s1_architecture" --run portrait="$RUNS/s1_portrait" --run all="$RUNS/s1_all" \
  --metric val/psnr --metric val/lpips_alex --metric codebook/0/perplexity \
  --output "$RUNS/curves_stage1.png" --title "stage I codebooks"
"$PY" -m adacode_jax.cli.report timing --run s1_natural="$RUNS/s1_natural" \
  --run s1_architecture="$RUNS/s1_architecture" --run s1_portrait="$RUNS/s1_portrait" \
  --run s1_all="$RUNS/s1_all" --run s2_k3="$RUNS/s2_k3" --run s2_k1="$RUNS/s2_k1" \
  --run s3_sr_x4="$RUNS/s3_sr_x4"

if [[ "${SHIP:-0}" == 1 ]]; then
  rm -rf adacode_jax/pretrained/compact_sr_x4
  mkdir -p adacode_jax/pretrained
  cp -r "$RUNS/s3_sr_x4/$E" adacode_jax/pretrained/compact_sr_x4
  mkdir -p docs/reproduction
  cp "$RUNS"/curves_stage*.png "$RUNS/compare/table.md" docs/reproduction/
  echo "shipped: adacode_jax/pretrained/compact_sr_x4"
fi
echo "done: comparison in $RUNS/compare/table.md, curves in $RUNS/curves_*.png"
