# Sourced by the GPU scripts: `step` runs their commands under one time budget.
# Needs OUT (results folder, with logs/), BUDGET (seconds) and GRACE (seconds a last step may run past it).
start=$EPOCHREALTIME
printf 'step\trc\tseconds\n' >"$OUT/steps.tsv"

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log to logs/NAME.log, one line in steps.tsv
  local name=$1 limit=$2; shift 2
  local used; used=$(awk "BEGIN {print int($EPOCHREALTIME - $start)}")
  if [ "$used" -ge "$BUDGET" ]; then printf '%s\tskipped\t0\n' "$name" >>"$OUT/steps.tsv"; return; fi
  [ $((used + limit)) -gt $((BUDGET + GRACE)) ] && limit=$((BUDGET + GRACE - used))
  local t0=$EPOCHREALTIME
  timeout "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(awk "BEGIN {printf \"%.1f\", $EPOCHREALTIME - $t0}")" | tee -a "$OUT/steps.tsv"
}
