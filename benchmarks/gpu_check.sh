#!/usr/bin/env bash
# First the whole loop on CUDA: the demo config trained on the device, evaluated and forecast
# (and, for comparison, trained on the CPU too). Then train the synthetic 1,000-ticker universe
# for one epoch on CUDA in both training modes (forking sequences and windows) at several batch
# sizes, and print the training targets/s of each (samples / seconds of epoch 1 in the run's
# history.csv; samples count forecast origins in both modes, and --batch-size is forecast
# origins per step in both: forking runs here pass --epoch-steps 0, so that a step takes the
# batch, rounded down to whole stretches of --chunk origins). The largest batches fill the device; the fastest batch of each mode
# is marked.
#
# Runs from the working tree with whatever python3 and torch the machine has (no venv, no
# network, nothing installed): PYTHONPATH=<repo> python3 -m forecaster ...
# Exits 0 with a message when there is no CUDA device; exits 3 naming the missing modules when
# the forecaster cannot be imported.
#
#   benchmarks/gpu_check.sh                          # 1,000 tickers, 10 years
#   TICKERS=200 benchmarks/gpu_check.sh              # smaller
#   MODES=forking BATCHES="8192 65536" benchmarks/gpu_check.sh
#   PRECISIONS="fp32 bf16" benchmarks/gpu_check.sh   # also bf16 autocast
#   PYTHON=/opt/py/bin/python3 KEEP=1 benchmarks/gpu_check.sh
#   DEVICE=cpu TICKERS=20 BATCHES=256 benchmarks/gpu_check.sh   # try the script without a GPU
#   WHEELS=/path/to/wheels benchmarks/gpu_check.sh   # unpack the wheels of modules it cannot import
#   TRAIN_ARGS="--chunk 64" benchmarks/gpu_check.sh  # other settings
#   LOOP=0 benchmarks/gpu_check.sh                   # skip the demo loop
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
TICKERS="${TICKERS:-1000}"
YEARS="${YEARS:-10}"
SEED="${SEED:-0}"
DEVICE="${DEVICE:-cuda}"
PRECISIONS="${PRECISIONS:-fp32}"
MODES="${MODES:-forking window}"
BATCHES="${BATCHES:-256 4096 32768 131072}"
LOOP="${LOOP:-1}"
read -r -a EXTRA <<<"${TRAIN_ARGS:-}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export NO_COLOR=1

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "gpu_check: no $PY on this machine (set PYTHON=/path/to/python3)" >&2
  exit 3
fi
if [[ "$PY" == */* ]]; then PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"; fi  # steps below run from $ROOT
for mode in $MODES; do
  if [[ "$mode" != forking && "$mode" != window ]]; then echo "gpu_check: unknown mode $mode in MODES" >&2; exit 2; fi
done

if ! WORK="$(mktemp -d "${TMPDIR:-/tmp}/forecaster-gpu-check.XXXXXX" 2>/dev/null)"; then
  echo "gpu_check: cannot make a temporary folder in ${TMPDIR:-/tmp} (set TMPDIR to a writable folder)" >&2
  exit 1
fi
WORK="$(cd "$WORK" && pwd)"
FAILED=0
# a step that ended on Ctrl-C or SIGTERM (the forecaster exits 130 for both) ends the check too
stopped() { if [[ "$1" == 130 || "$1" == 143 ]]; then echo "gpu_check: stopped" >&2; exit 130; fi; }
# and so does Ctrl-C or SIGTERM at any other moment (writing the universe, a python step): bash
# would otherwise die of the signal itself, after the step's traceback
trap 'echo "gpu_check: stopped" >&2; exit 130' INT TERM
if [[ "${KEEP:-0}" != 1 ]]; then
  trap 'rm -rf "$WORK"' EXIT
else
  echo "gpu_check: keeping $WORK"
fi

# wheels for what this python lacks (no pip, no network needed: a wheel is a zip file)
# (only the wheels whose modules this python cannot import: the folder comes before its own
# packages on PYTHONPATH, so a wheel of one it has, a CPU torch say, would hide it)
if [[ -n "${WHEELS:-}" ]]; then
  mkdir -p "$WORK/deps"
  "$PY" - "$WHEELS" "$WORK/deps" <<'EOF'
import importlib.util, sys, zipfile
from pathlib import Path
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        tops = {n.split("/")[0].removesuffix(".py") for n in z.namelist()}
        tops = {t for t in tops if not t.endswith((".dist-info", ".data")) and t.isidentifier()}
        if tops and all(importlib.util.find_spec(t) is not None for t in tops):
            continue
        z.extractall(sys.argv[2])
        print(f"gpu_check: unpacked {wheel.name}")
EOF
  export PYTHONPATH="$PYTHONPATH:$WORK/deps"
fi

# 1. what can be imported: torch first, then everything train needs
"$PY" - <<'EOF' || exit 3
import importlib, sys
mods = ["torch", "numpy", "pandas", "pyarrow", "typer", "rich", "safetensors", "pydantic",
        "exchange_calendars", "filelock", "scipy", "arch"]  # arch: the garch fit after the epochs
missing = []
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as e:  # ImportError, or a broken install
        missing.append(f"{m} ({type(e).__name__}: {e})")
if missing:
    print("gpu_check: cannot run the forecaster here; missing or broken imports:", file=sys.stderr)
    for m in missing:
        print(f"  - {m}", file=sys.stderr)
    print("install them into this python, set PYTHON to one that has them, or point WHEELS at a "
          "folder of wheels for them (and PYTHONPATH at pure-Python packages)", file=sys.stderr)
    sys.exit(3)
try:
    import forecaster.cli  # noqa: F401
    import forecaster.training  # noqa: F401
except Exception as e:
    print(f"gpu_check: the forecaster does not import from {sys.path[0] or '.'}: "
          f"{type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(3)
EOF

# 2. a CUDA device, or a clean exit
if [[ "$DEVICE" == cuda ]] && ! "$PY" - <<'EOF'
import sys, torch
if not torch.cuda.is_available():
    print(f"gpu_check: no CUDA device visible to torch {torch.__version__} "
          f"(CUDA build: {torch.version.cuda or 'none'}); nothing to measure")
    sys.exit(1)
p = torch.cuda.get_device_properties(0)
print(f"gpu_check: {torch.cuda.get_device_name(0)}, {p.total_memory / 2**30:.0f} GiB, "
      f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"bf16 supported: {torch.cuda.is_bf16_supported()}")
EOF
then
  exit 0
fi

# 3. the loop on the device: train the demo config, evaluate it, forecast from it
if [[ "$LOOP" == 1 ]]; then
  devices=("$DEVICE")
  if [[ "$DEVICE" != cpu ]]; then devices+=(cpu); fi
  for dev in "${devices[@]}"; do
    start=$(date +%s)
    rc=0
    (cd "$ROOT" && "$PY" -m forecaster train --config configs/demo.toml --device "$dev" --threads 0 \
      --run-dir "$WORK/demo-$dev" --quiet) >"$WORK/loop.log" 2>&1 || rc=$?
    if [[ $rc != 0 ]]; then
      stopped $rc
      FAILED=1
      echo "gpu_check: training the demo config on $dev failed; last lines:" >&2
      tail -n 20 "$WORK/loop.log" >&2
      continue
    fi
    "$PY" - "$WORK/demo-$dev" "$dev" "$(( $(date +%s) - start ))" <<'EOF'
import csv, json, sys
from pathlib import Path
run = Path(sys.argv[1])
rows = list(csv.DictReader(open(run / "history.csv")))
best = min(rows, key=lambda r: float(r["val_loss"]))
meta = json.loads((run / "run.json").read_text())
print(f"gpu_check: demo trained on {sys.argv[2]} (run.json device: {meta.get('device')}): {len(rows)} epochs, "
      f"best validation pinball {float(best['val_loss']):.5f} at epoch {best['epoch']}, "
      f"{sum(float(r['seconds']) for r in rows):.1f} s of epochs, command {sys.argv[3]} s")
EOF
  done
  if [[ -d "$WORK/demo-$DEVICE" ]]; then
    rc=0
    (cd "$ROOT" && "$PY" -m forecaster evaluate --run "$WORK/demo-$DEVICE" --no-plot) >"$WORK/loop.log" 2>&1 || rc=$?
    if [[ $rc == 0 ]]; then
      echo "gpu_check: evaluate of the $DEVICE-trained demo run exited 0; its last lines:"
      tail -n 10 "$WORK/loop.log" | sed 's/^/  /'
    else
      stopped $rc
      FAILED=1
      echo "gpu_check: evaluate of the $DEVICE-trained demo run failed; last lines:" >&2
      tail -n 20 "$WORK/loop.log" >&2
    fi
    rc=0
    (cd "$ROOT" && "$PY" -m forecaster predict --run "$WORK/demo-$DEVICE" --offline --out "$WORK/forecasts") \
      >"$WORK/loop.log" 2>&1 || rc=$?
    if [[ $rc == 0 ]]; then
      n=$(find "$WORK/forecasts" -name "*.csv" ! -name latest.csv -exec cat {} + | grep -vc "^ticker" || true)
      echo "gpu_check: predict --offline of the $DEVICE-trained demo run exited 0: $n forecast rows"
    else
      stopped $rc
      FAILED=1
      echo "gpu_check: predict of the $DEVICE-trained demo run failed; last lines:" >&2
      tail -n 20 "$WORK/loop.log" >&2
    fi
  fi
fi

# 4. the universe, as CSV files
start=$(date +%s)
"$PY" -m forecaster.synthetic "$WORK/data" --universe "$TICKERS" --years "$YEARS" --seed "$SEED" >/dev/null
echo "gpu_check: wrote $TICKERS synthetic tickers ($YEARS years) in $(( $(date +%s) - start )) s"
LIST="$(cd "$WORK/data" && ls -- *.csv | sed 's/\.csv$//' | paste -sd, -)"


# 5. one epoch per mode, batch and precision
declare -A RESULT
declare -A RATE
declare -A STEPS=([forking]="--epoch-steps 0" [window]="")
for mode in $MODES; do
  for batch in $BATCHES; do
    for prec in $PRECISIONS; do
      key="$mode $batch $prec"
      run="$WORK/run-$mode-$batch-$prec"
      start="${EPOCHREALTIME:-$(date +%s)}"
      if [[ "$prec" == bf16 && "$DEVICE" != cuda ]]; then  # train would run it in fp32
        RESULT[$key]="skipped: bf16 autocast is for cuda only"
        RATE[$key]=0
        continue
      fi
      rc=0
      "$PY" -m forecaster train --source csv --data-dir "$WORK/data" --tickers "$LIST" \
        --epochs 1 --device "$DEVICE" --precision "$prec" --train-mode "$mode" --batch-size "$batch" \
        ${STEPS[$mode]-} \
        --run-dir "$run" --quiet ${EXTRA[@]+"${EXTRA[@]}"} >"$WORK/train.log" 2>&1 || rc=$?
      if [[ $rc != 0 ]]; then
        stopped $rc
        FAILED=1
        echo "gpu_check: training ($key) failed; last lines:" >&2
        tail -n 20 "$WORK/train.log" >&2
        RESULT[$key]="failed"
        RATE[$key]=0
        continue
      fi
      end="${EPOCHREALTIME:-$(date +%s)}"
      line="$("$PY" - "$run" "$start" "$end" <<'EOF'
import csv, json, sys
from pathlib import Path
run = Path(sys.argv[1])
row = next(csv.DictReader(open(run / "history.csv")))
meta = json.loads((run / "run.json").read_text())
samples, secs = int(row["samples"]), float(row["seconds"])
try:
    wall = f"{float(sys.argv[3].replace(',', '.')) - float(sys.argv[2].replace(',', '.')):.1f} s"
except ValueError:
    wall = "?"
print(f"{samples / secs:.0f}|{samples / secs:>12,.0f} targets/s  ({samples:,} origins, epoch {secs:.1f} s incl. "
      f"validation; device {meta.get('device')}; {len(meta['tickers'])} tickers; command {wall})")
EOF
)"
      RATE[$key]="${line%%|*}"
      RESULT[$key]="${line#*|}"
      printf 'gpu_check: %-8s batch %-7s %-5s %s\n' "$mode" "$batch" "$prec" "${RESULT[$key]}"
      rm -rf "$run"
    done
  done
done

echo
echo "gpu_check: one epoch of the default model over the $TICKERS-ticker universe${TRAIN_ARGS:+ ($TRAIN_ARGS)}"
for mode in $MODES; do
  best=""
  for batch in $BATCHES; do
    for prec in $PRECISIONS; do
      key="$mode $batch $prec"
      if [[ "${RATE[$key]}" -gt 0 && ( -z "$best" || "${RATE[$key]}" -gt "${RATE[$best]}" ) ]]; then best="$key"; fi
    done
  done
  for batch in $BATCHES; do
    for prec in $PRECISIONS; do
      key="$mode $batch $prec"
      mark=""
      if [[ "$key" == "$best" ]]; then mark="  <- fastest $mode"; fi
      printf '  %-8s batch %-7s %-5s %s%s\n' "$mode" "$batch" "$prec" "${RESULT[$key]}" "$mark"
    done
  done
done
if [[ "$FAILED" != 0 ]]; then
  echo "gpu_check: some steps failed (above)" >&2
  exit 1
fi
