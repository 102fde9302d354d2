#!/usr/bin/env bash
# Every check on a lent accelerator machine (one GPU or TPU chip); the step limits add up to
# 530 s, under 9 minutes on one H100:
#
#   1 env     device, driver, jax/jaxlib/flax versions, modules missing
#   2 parity  the six official networks (seed-0 weights) against the reference outputs:
#             float32 with matmul precision 'highest' (TF32 off), and bfloat16
#   3 speed   stage III x4 step at official widths (batch 8 and 16, bf16 and fp32: ms/step,
#             images/s, MFU), the x4 forward to 256² and 512², the data pipeline's pairs/s
#   4 train   the compact x4 recipe from checkpoints/compact/stage2_k3 on the embedded images
#             (not the held-out set), asked to stop (SIGTERM) after TRAIN_SECONDS; it saves
#             and exports
#   5 score   that export, bicubic and the shipped compact model on the held-out set (float32)
#
#   bash launch/device_run.sh                                          # on the GPU machine
#   JAX_PLATFORMS=cpu ADACODE_DEVICE_SMOKE=1 bash launch/device_run.sh  # CPU smoke, tiny sizes
#
# Writes under OUT (default ./device_out): summary.json (each step's status, exit code, seconds
# and figures), device_run.log (every command's output) and sr_x4_run.tar.gz (the export,
# metrics.jsonl, train.log); at most 8 files of at most 16 MiB. Each step has its own time
# limit and runs whatever happened to the steps before it; a failed step is one line. The exit
# code is the number of failed steps.
#
# Variables: OUT; PY (default python3); TRAIN_IMAGES (a folder of training images, default the
# embedded images); TRAIN_SECONDS; NUM_STEPS (default 1200, the recipe's); WORKERS (the
# training run's data worker processes, default 0 as in the recipe); the limits T_ENV,
# T_PARITY, T_SPEED, T_TRAIN, T_SCORE (seconds); KEEP_WORK=1 keeps the work folder (runs,
# predictions, step results; its path is printed first). Wheels in .whl/ (packages the
# machine's image lacks) are installed into SITE (default /tmp/adacode_site), put on PYTHONPATH.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 99
REPO=$PWD
PY=${PY:-$(command -v python3 || echo python)}
OUT=${OUT:-./device_out}
mkdir -p "$OUT" || exit 99
OUT=$(cd "$OUT" && pwd)
SMOKE=${ADACODE_DEVICE_SMOKE:-0}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/adacode_device_run.XXXXXX")
LOG=$OUT/device_run.log
STEPS=$WORK/steps.tsv
RUN=$WORK/sr_x4_run
ARCHIVE=$OUT/sr_x4_run.tar.gz
TRAIN_IMAGES=${TRAIN_IMAGES:-adacode_jax/assets/images}
MAX_FILES=8
MAX_BYTES=$((16 * 1024 * 1024))
: >"$LOG"
: >"$STEPS"
rm -f "$OUT/summary.json" "$ARCHIVE"
if [[ "${KEEP_WORK:-0}" != 1 ]]; then
  trap 'rm -rf "$WORK"' EXIT
fi

if [[ "$SMOKE" == 1 ]]; then
  # The same code on tiny shapes; XLA's LLVM at -O0: compiling dominates, figures mean nothing.
  export XLA_FLAGS=${XLA_FLAGS:---xla_backend_optimization_level=0}
  T_ENV=${T_ENV:-60} T_PARITY=${T_PARITY:-120} T_SPEED=${T_SPEED:-240} T_TRAIN=${T_TRAIN:-300}
  T_SCORE=${T_SCORE:-120} TRAIN_SECONDS=${TRAIN_SECONDS:-1}
  parity_args=(--cases stage1:float32 disc:float32 disc:bfloat16)
  speed_args=(--tiny --batches 2 --dtypes float32 --lq-sizes 16 --runs 1 --train-runs 1
    --data-seconds 0.5)
  train_extra=(--config.data.crop_size=64 --config.train.log_every=1)
  score_args=(--limit 2)
else
  T_ENV=${T_ENV:-30} T_PARITY=${T_PARITY:-85} T_SPEED=${T_SPEED:-130} T_TRAIN=${T_TRAIN:-225}
  T_SCORE=${T_SCORE:-60} TRAIN_SECONDS=${TRAIN_SECONDS:-190}
  parity_args=()
  speed_args=(--batches 8 16 --dtypes bfloat16 float32 --lq-sizes 64 128)
  train_extra=()
  score_args=(--model shipped=adacode_jax/pretrained/compact_sr_x4)
fi
WORKERS=${WORKERS:-0}        # the recipe's: examples made in the training process
NUM_STEPS=${NUM_STEPS:-1200}  # the recipe's; TRAIN_SECONDS bounds the run
# A rerun on the same machine loads the compiled programs instead of compiling them again.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/adacode_jax_cache}

CHECK=("$PY" -m adacode_jax.cli.device_check)
failed=0
say() {
  echo "$*" | tee -a "$LOG"
}

# record NAME EXIT_CODE START_SECONDS: one status line, on the console and in $STEPS.
record() {
  local name=$1 rc=$2 took=$((SECONDS - $3)) status=ok
  if ((rc == 124 || rc == 137)); then
    status=timeout
  elif ((rc != 0)); then
    status=failed
  fi
  printf '%s\t%d\t%d\t%s\n' "$name" "$rc" "$took" "$status" >>"$STEPS"
  if [[ "$status" == ok ]]; then
    say "[$name] ok, ${took} s"
  else
    failed=$((failed + 1))
    say "[$name] FAILED: $status (exit $rc) after ${took} s; see $LOG"
  fi
}

# step NAME LIMIT_S CMD...: CMD under a time limit (SIGTERM, then SIGKILL 15 s later); its
# output goes to the log, its last line also to the console.
step() {
  local name=$1 limit=$2 t0=$SECONDS rc last
  shift 2
  echo "=== $name (limit ${limit} s): $*" >>"$LOG"
  timeout --kill-after=15 "$limit" "$@" >"$WORK/step.out" 2>&1
  rc=$?
  cat "$WORK/step.out" >>"$LOG"
  last=$(tail -n 1 "$WORK/step.out" | cut -c1-300)
  if [[ -n "$last" ]]; then
    echo "  $last"
  fi
  record "$name" "$rc" "$t0"
}

# The compact x4 recipe, asked to stop (SIGTERM: it saves and exports at the next step) once
# TRAIN_SECONDS have passed and it has logged a step, or LIMIT - 30 s have passed; killed at LIMIT.
train_until() {
  local limit=$1 t0=$SECONDS console=$WORK/train_console.txt pid rc
  : >"$console"   # appended to by the run and by this loop's notes (O_APPEND: none overwrites)
  "$PY" -m adacode_jax.main --config configs/stage3_sr.py:x4,compact --workdir "$RUN" \
    --config.train.stage2_checkpoint=checkpoints/compact/stage2_k3 \
    "--config.data.sources[0].path=$TRAIN_IMAGES" "--config.data.sources[0].list_file=" \
    --config.train.eval_every=0 "--config.data.worker_count=$WORKERS" \
    "--config.train.num_steps=$NUM_STEPS" "${train_extra[@]}" \
    >>"$console" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    if { ((SECONDS - t0 >= TRAIN_SECONDS)) && grep -q '^step  *[0-9]' "$console"; } ||
      ((SECONDS - t0 >= limit - 30)); then
      echo "SIGTERM after $((SECONDS - t0)) s" >>"$console"
      kill -TERM "$pid"
      break
    fi
    sleep 1
  done
  while kill -0 "$pid" 2>/dev/null && ((SECONDS - t0 < limit)); do
    sleep 1
  done
  kill -KILL "$pid" 2>/dev/null && echo "SIGKILL after $((SECONDS - t0)) s" >>"$console"
  wait "$pid"
  rc=$?
  cat "$console"
  return "$rc"
}

train_step() {
  local t0=$SECONDS rc
  echo "=== train (limit ${T_TRAIN} s, stop after ${TRAIN_SECONDS} s): $TRAIN_IMAGES" >>"$LOG"
  train_until "$T_TRAIN" >>"$LOG" 2>&1
  rc=$?
  if ((rc == 0)); then
    timeout 60 "${CHECK[@]}" train-report --json "$WORK/train.json" \
      --workdir "$RUN" --note "train_images=$TRAIN_IMAGES" \
      --note "train_images_count=$(find "$TRAIN_IMAGES" -type f \( -iname '*.png' -o \
        -iname '*.jp*g' \) | wc -l)" \
      --note "train_seconds=$((SECONDS - t0))" --note "workers=$WORKERS" \
      --note "num_steps=$NUM_STEPS" --note "train_seconds_bound=$TRAIN_SECONDS" \
      --note "signals=$(grep -o '^SIG[A-Z]* after [0-9]* s' "$WORK/train_console.txt" |
        paste -sd,)" \
      >>"$LOG" 2>&1
    rc=$?
  fi
  if ((rc == 0)); then
    local keep=(export/generator) f
    for f in metrics.jsonl train.log; do
      if [[ -f "$RUN/$f" ]]; then
        keep+=("$f")
      fi
    done
    tar -czf "$ARCHIVE" -C "$RUN" "${keep[@]}" >>"$LOG" 2>&1
    rc=$?
  fi
  record train "$rc" "$t0"
}

# At most MAX_FILES files (summary.json included) of at most MAX_BYTES each under OUT.
limits_step() {
  local t0=$SECONDS n big
  if (($(stat -c %s "$LOG") > MAX_BYTES - 65536)); then
    tail -c $((MAX_BYTES / 2)) "$LOG" >"$WORK/log_tail" && mv "$WORK/log_tail" "$LOG"
  fi
  n=$(($(find "$OUT" -type f ! -name summary.json | wc -l) + 1))
  big=$(find "$OUT" -type f -size +$((MAX_BYTES / 1024))k)
  say "out: $n files; over 16 MiB: ${big:-none}"
  record limits "$(((n > MAX_FILES) || ${#big}))" "$t0"
}

say "device_run: smoke=$SMOKE out=$OUT work=$WORK; limits env $T_ENV, parity $T_PARITY," \
  "speed $T_SPEED, train $T_TRAIN (stop after $TRAIN_SECONDS), score $T_SCORE s: at most" \
  "$((T_ENV + T_PARITY + T_SPEED + T_TRAIN + T_SCORE)) s"
if [[ -d .whl ]]; then
  SITE=${SITE:-/tmp/adacode_site}
  if "$PY" -m pip --version >/dev/null 2>&1; then
    step wheels 120 "$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" .whl/*.whl
  else  # no pip: a wheel is a zip of what --target would hold
    # shellcheck disable=SC2016  # expanded by the inner bash
    step wheels 120 bash -c 'for w in "$2"/*.whl; do "$0" -m zipfile -e "$w" "$1" || exit 1; done' \
      "$PY" "$SITE" .whl
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

step env "$T_ENV" "${CHECK[@]}" env --json "$WORK/env.json"
step parity "$T_PARITY" "${CHECK[@]}" parity --json "$WORK/parity.json" "${parity_args[@]}"
step speed "$T_SPEED" "${CHECK[@]}" speed --json "$WORK/speed.json" "${speed_args[@]}"
train_step
step score "$T_SCORE" "${CHECK[@]}" score --json "$WORK/score.json" --work "$WORK/score" \
  --model "trained=$RUN/export/generator" "${score_args[@]}"
limits_step
MODE=device
if [[ "$SMOKE" == 1 ]]; then
  MODE=smoke
fi
timeout 60 "${CHECK[@]}" summary --json "$OUT/summary.json" --steps "$STEPS" --work "$WORK" \
  --note "mode=$MODE" \
  --note "train_images=$TRAIN_IMAGES" --note "held_out=adacode_jax/assets/evalset" \
  >>"$LOG" 2>&1 || failed=$((failed + 1))
say "device_run: $failed failed step(s); $OUT/summary.json"
exit "$failed"
