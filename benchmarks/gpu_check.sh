#!/usr/bin/env bash
# One GPU check (issue 21): the demo, PGD speed, AutoAttack cost, DIP speed, training
# throughput (fp32, bf16, channels-last, and on a GPU bf16 + channels-last) and the `cuda` tests,
# with every figure of docs/performance.md printed at the end.
#
#   bash benchmarks/gpu_check.sh [--cpu] [--no-demo] [--out DIR]
#
# Default: sizes of docs/performance.md on one CUDA GPU (about 5 minutes on an H200-class GPU;
# each step has its own time limit, so one slow step cannot eat the others').
# --cpu: a smoke check of the same steps at small sizes on the CPU (the demo still runs in
#        full; its wall time there is a CPU figure, not a GPU one). --no-demo skips the demo.
# Environment: PYTHON (default python3) with deepshield's dependencies installed;
# DEEPSHIELD_SHARED (default ../shared) for the CIFAR-10 batches AutoAttack needs (the step is
# skipped, saying so, when they are absent). Logs of every step are kept in DIR (default
# gpu_check_out/, relative to the current folder); the exit status is the number of failed
# steps. DIR must be new, empty, or a folder this script wrote before: it lists what it writes
# there in DIR/.gpu_check_written and, on the next run, removes only those entries; a folder
# holding anything else (no such list) is refused, exit 2, and left as it was.
set -u
START=$PWD
cd "$(dirname "$0")/.."
MODE=gpu
DEMO=1
OUT=gpu_check_out
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) MODE=cpu ;;
        --no-demo) DEMO=0 ;;
        --out) OUT="$2"; shift ;;
        *) echo "gpu_check.sh: unknown option $1 (use --cpu, --no-demo, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done
case "$OUT" in /*) ;; *) OUT="$START/$OUT" ;; esac  # --out relative to the caller's folder
PY=${PYTHON:-python3}
SHARED=${DEEPSHIELD_SHARED:-$PWD/../shared}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" DEEPSHIELD_SHARED="$SHARED"

# The output folder: this script deletes only what it wrote, as listed in its marker file.
MARKER=.gpu_check_written  # one entry of $OUT a line: the files and folders this script made
if [ -e "$OUT" ] && [ ! -d "$OUT" ]; then
    echo "gpu_check.sh: --out $OUT is a file, not a folder; name a new or empty folder" >&2
    exit 2
fi
if [ -d "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
    if [ ! -f "$OUT/$MARKER" ]; then
        echo "gpu_check.sh: --out $OUT holds files this script did not write (no $MARKER); nothing was changed: name a new or empty folder" >&2
        exit 2
    fi
    while IFS= read -r entry; do  # the previous run's outputs only; other files are kept
        case "$entry" in "" | . | .. | */*) continue ;; esac
        rm -rf -- "${OUT:?}/$entry"
    done <"$OUT/$MARKER"
    rm -f -- "$OUT/$MARKER"
fi
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2
: >"$OUT/$MARKER"
# own NAME...: record entries of $OUT as written by this script (removed by its next run)
own() { printf '%s\n' "$@" >>"$OUT/$MARKER"; }
own cache demo sf-plain
export DEEPSHIELD_CACHE="$OUT/cache"  # the demo starts from an empty cache
FAILED=0

if [ "$MODE" = gpu ]; then
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "gpu_check.sh: torch sees no CUDA device; use --cpu for the CPU smoke check" >&2
        exit 2
    }
    DEV=cuda THREADS=$(nproc) SLOWER=1
    ATTACK=(--batch 256 --repeats 3)
    AA=(--n 256 --eps 2/255 --epochs 12)
    TRAIN=(-e 4)
    DIP=(--n 4 --chunk 16,64 --fast-preset fast,balanced)
    THROUGHPUT=(--n 4096 --batch 128 --repeats 3)
    TESTS=(tests)
else
    DEV=cpu THREADS=1 SLOWER=6  # a shared CPU: the same steps, longer limits
    ATTACK=(--batch 8 --repeats 1)
    AA=(--n 8 --eps 2/255 --epochs 1)
    TRAIN=(-e 1 --data-arg n=200)
    DIP=(--n 4 --slow-iters 20 --fast-iters 20 --chunk 2 --fast-preset fast,balanced)
    THROUGHPUT=(--n 32 --batch 16 --repeats 1)
    TESTS=(tests/test_dip.py tests/test_runs.py tests/test_attacks.py)
fi

# step NAME LIMIT_S CMD...: run CMD with a time limit, log to $OUT/NAME.log, record its wall and
# CPU seconds in $OUT/NAME.wall.
step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    own "$name.log" "$name.time" "$name.wall"
    local rc TIMEFORMAT='%R %U %S'  # bash's time: wall, user and system seconds of the step
    { time timeout "$((limit * SLOWER))" "$@" >"$OUT/$name.log" 2>&1; } 2>"$OUT/$name.time"
    rc=$?
    awk '{printf "%.1f s wall, %.1f CPU-s\n", $1, $2 + $3}' "$OUT/$name.time" >"$OUT/$name.wall"
    if [ $rc -ne 0 ]; then
        FAILED=$((FAILED + 1))
        echo "   FAILED (exit $rc; 124 = over $((limit * SLOWER)) s): tail of $OUT/$name.log"
        tail -5 "$OUT/$name.log" | sed 's/^/   /'
    else
        echo "   done: $(cat "$OUT/$name.wall")"
    fi
}

if [ "$DEMO" = 1 ]; then
    step demo 300 "$PY" -m deepshield -q --threads "$THREADS" demo --out "$OUT/demo"
else
    echo "== demo: skipped (--no-demo)"
fi
step attack_speed 240 "$PY" benchmarks/attack_speed.py --device "$DEV" --threads "$THREADS" \
    "${ATTACK[@]}"
if [ -d "$SHARED/data/cifar10/cifar-10-batches-py" ]; then
    step autoattack 240 "$PY" benchmarks/autoattack_cost.py --device "$DEV" --threads "$THREADS" \
        --data "$SHARED/data/cifar10" "${AA[@]}"
else
    echo "== autoattack: skipped, $SHARED/data/cifar10/cifar-10-batches-py is absent (set DEEPSHIELD_SHARED)"
fi
step dip_detector 240 "$PY" -m deepshield -q --threads "$THREADS" train \
    --config configs/defense_plain.yaml --device "$DEV" --out "$OUT/sf-plain" "${TRAIN[@]}"
step dip_speed 300 "$PY" benchmarks/dip_speed.py --run "$OUT/sf-plain" --device "$DEV" \
    --threads "$THREADS" "${DIP[@]}"
step train_throughput 240 "$PY" benchmarks/train_throughput.py --device "$DEV" \
    --threads "$THREADS" "${THROUGHPUT[@]}"
step train_throughput_bf16 240 "$PY" benchmarks/train_throughput.py --device "$DEV" \
    --threads "$THREADS" "${THROUGHPUT[@]}" --amp bf16
step train_throughput_channels_last 240 "$PY" benchmarks/train_throughput.py --device "$DEV" \
    --threads "$THREADS" "${THROUGHPUT[@]}" --channels-last
if [ "$MODE" = gpu ]; then  # the CPU emulates bf16 (~30x slower): GPU only
    step train_throughput_bf16_channels_last 240 "$PY" benchmarks/train_throughput.py \
        --device "$DEV" --threads "$THREADS" "${THROUGHPUT[@]}" --amp bf16 --channels-last
fi
step pytest_cuda 300 "$PY" -m pytest -q -m cuda -p no:cacheprovider "${TESTS[@]}"

echo
echo "======== figures ($MODE; $("$PY" -c 'import torch; print("torch", torch.__version__, "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device")'); $(date -u +%Y-%m-%dT%H:%MZ))"
if [ -f "$OUT/demo.wall" ]; then
    echo "-- deepshield demo: $(cat "$OUT/demo.wall") ($(grep -h 'finished in' "$OUT/demo.log"))"
fi
echo "-- PGD-10 (attack_speed.py; ratio = time / plain loop):"
grep -hE '^(small_cnn|resnet18_cifar):|^(plain loop|deepshield|torchattacks|ART)' "$OUT/attack_speed.log"
if [ -f "$OUT/autoattack.log" ]; then
    echo "-- AutoAttack ($(head -1 "$OUT/autoattack.log")):"
    grep -h '^|' "$OUT/autoattack.log"
fi
echo "-- DIP (dip_speed.py; per image):"
grep -hE 's/image|speed-up|recall ratio' "$OUT/dip_speed.log"
echo "-- training (train_throughput.py):"
for log in train_throughput train_throughput_bf16 train_throughput_channels_last \
    train_throughput_bf16_channels_last; do  # fp32, bf16, channels-last, both (GPU only)
    [ -f "$OUT/$log.log" ] && grep -hE '^(resnet18|plain loop|deepshield Trainer|train throughput)' \
        "$OUT/$log.log"
done
echo "-- pytest -m cuda: $(tail -1 "$OUT/pytest_cuda.log")"
echo "-- failed steps: $FAILED"
exit "$FAILED"
