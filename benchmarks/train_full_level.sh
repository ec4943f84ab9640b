#!/usr/bin/env bash
# The "full" adaptation level on a GPU: `wildreid train` (ArcFace fine-tuning of the whole
# backbone, settings chosen by validation on the database alone) for several datasets at once.
#
#   bash benchmarks/train_full_level.sh lion:LionData nyala:NyalaData \
#       lion-paper:LionData:paper_split.csv:paper_split:train
#
# Each argument is NAME:FOLDER[:SPLIT_FILE:SPLIT_COLUMN:TRAIN_VALUE]: the model NAME is trained
# on FOLDER's database rows (or the rows whose SPLIT_COLUMN in FOLDER/SPLIT_FILE is TRAIN_VALUE).
# The runs share the GPU and run side by side (each in its own process, WORKERS decoding
# processes each); each is cut at LIMIT_S. The models land in MODELS/NAME (config.json,
# model.safetensors, train.json); use one with `--backbone local-dir:MODELS/NAME`.
# Environment: DATA (default ../shared/data), MODELS (default bench-out/models), WORKERS
# (default 4), LIMIT_S (default 300), BACKBONE (default efficientnet-lite0), PYTHON, TRAIN_ARGS
# (more `wildreid train` options, e.g. "--lr 3e-4 --epochs 20 --no-flip --val-fraction 0" to skip
# the validation search).
set -uo pipefail
cd "$(dirname "$0")/.."
DATA="${DATA:-../shared/data}"
MODELS="${MODELS:-bench-out/models}"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$MODELS"

echo "== wildreid full level, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
pids=()
names=()
for spec in "$@"; do
  IFS=: read -r name folder split_file split_column train_value <<<"$spec"
  split_args=()
  if [ -n "${split_file:-}" ]; then
    split_args=(--split-file "$DATA/$folder/$split_file" --split-column "$split_column" --train-value "$train_value")
  fi
  # TRAIN_ARGS unquoted on purpose: it holds several options.
  timeout -k 10 "${LIMIT_S:-300}" "$PY" -m wildreid train "$DATA/$folder" --out "$MODELS/$name" \
    --backbone "${BACKBONE:-efficientnet-lite0}" --workers "${WORKERS:-4}" "${split_args[@]}" \
    ${TRAIN_ARGS:-} \
    >"$MODELS/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
done
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"
  code=$?
  [ "$code" -ne 0 ] && status=$code
  echo "-- ${names[$i]}: exit $code$([ "$code" -eq 124 ] && echo " (cut at LIMIT_S)")"
  # The run's own summary lines (its progress bars are in MODELS/NAME.log).
  grep -E "training on|chosen:|trained [0-9]+ epoch|model:|Error|error" "$MODELS/${names[$i]}.log" | tail -8
done
echo "== done $(date -u '+%H:%M:%S UTC'), exit $status"
exit $status
