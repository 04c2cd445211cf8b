# Helpers of the study scripts (sourced): parallel lanes, finished cells kept in the repository, and
# pretraining runs made once.
#
#   source benchmarks/lanes.sh
#   run_lanes CLAIMS LOGS FUNCTION JOB...
#
# runs `FUNCTION <JOB split at ':'>` for every JOB, $LANES at a time, in the order given; a lane takes the
# next job nobody has claimed (an atomic mkdir in CLAIMS, emptied before and after) and writes its output
# to LOGS/<JOB with ':' as '-'>.log. A failed job is reported on stderr and the lanes go on; run_lanes
# then returns 1, so that a script under `set -e` stops before it joins reports over missing runs.
LANES=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # cores, not the OpenMP limit GNU nproc honours

run_lanes() {
  local claims=$1 logs=$2 fn=$3 lanes=() lane job log; shift 3
  rm -rf "$claims"; mkdir -p "$claims" "$logs"
  for ((lane = 0; lane < LANES; lane++)); do
    { for job in "$@"; do
        mkdir "$claims/${job//[:\/]/_}" 2>/dev/null || continue
        log=$logs/${job//:/-}.log
        $fn ${job//:/ } > "$log" 2>&1 || { echo "failed: $job (log: $log)" >&2; touch "$claims/.failed"; }
      done; } &
    lanes+=($!)
  done
  for pid in "${lanes[@]}"; do wait $pid; done
  local failed=0; [ -e "$claims/.failed" ] && failed=1
  rm -rf "$claims"
  return $failed
}

# cell_count AMOUNTS SEEDS: the cells of one method's benchmark over the comma-separated AMOUNTS (fractions or
# labelled counts) and SEEDS seeds, the N of its `--shard I/N` processes
cell_count() { echo $(( $(tr ',' '\n' <<< "$1" | wc -l) * $2 )); }

# Finished benchmark cells between a runs folder and a committed one: their small records only (summary,
# settings, curves, per-case scores; no weights), so that a study spread over sittings on fresh machines
# skips the cells already done. A cell's folder keeps its path relative to the runs folder; the reports'
# joined copies (report-*) are left out; cell.json, the mark of a finished cell, is copied last.
CELL_RECORDS=(config.json split.json plan.json transfer.json convergence.json metrics.jsonl test_metrics.json cell.json)

copy_cell() {  # copy_cell FROM TO
  local f; mkdir -p "$2"
  for f in "${CELL_RECORDS[@]}"; do [ ! -f "$1/$f" ] || cp "$1/$f" "$2/"; done
}

# this machine in one line (CPU model, cores, torch): cells of one study may finish on different machines,
# and floating-point results (and wall times) differ between CPU models
machine_line() {
  local cpu; cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
  echo "${cpu:-$(uname -m)}, $LANES cores, torch $($PY -c 'import torch; print(torch.__version__)')"
}

keep_cells() {  # keep_cells RUNS KEEP: every finished cell of RUNS into KEEP (refreshed if re-scored); a cell new to
  local cell to   # KEEP gets machine.txt, the machine that finished it (cells restored from KEEP already have theirs)
  [ -d "$1" ] || return 0
  while IFS= read -r cell; do
    to=$2/${cell#$1/}
    [ -f "$to/cell.json" ] || { mkdir -p "$to"; machine_line > "$to/machine.txt"; }
    copy_cell "$cell" "$to"
  done < <(find "$1" -path "$1/report-*" -prune -o -name cell.json -printf '%h\n')
}

restore_cells() {  # restore_cells KEEP RUNS: every kept cell that RUNS has not finished into RUNS
  local cell
  [ -d "$1" ] || return 0
  while IFS= read -r cell; do
    [ -f "$2/${cell#$1/}/cell.json" ] || { rm -rf "$2/${cell#$1/}"; copy_cell "$cell" "$2/${cell#$1/}"; }
  done < <(find "$1" -name cell.json -printf '%h\n')
}

# finished_at RUN STEPS: whether the weights of the pretraining run RUN are those of step STEPS
finished_at() { grep -qsE "\"step\": $2(,|\$)" "$1/model.json"; }

# keep_digests PRETRAIN STEPS FILE: the SHA-256 of the weights of every run in PRETRAIN finished at STEPS
# steps, merged into FILE. Pretraining is rerun on each fresh machine: two lines for one run would say
# that another machine pretrained it to other weights.
keep_digests() {
  local run lines=()
  [ ! -f "$3" ] || mapfile -t lines < "$3"
  for run in "$1"/*/; do
    finished_at "$run" $2 || continue
    lines+=("$(sha256sum < "$run/model.safetensors" | cut -d' ' -f1)  $(basename "$run")")
  done
  [ ${#lines[@]} -eq 0 ] || { mkdir -p "$(dirname "$3")"; printf '%s\n' "${lines[@]}" | sort -u -k2 -k1 > "$3"; }
}

# pretrain_once OUT STEPS ARGS...: `$VP pretrain ARGS... --out OUT --steps STEPS`, unless OUT holds a run
# finished at STEPS steps; a run cut off after a checkpoint resumes, anything else in OUT is replaced.
pretrain_once() {
  local out=$1 steps=$2 again=--overwrite; shift 2
  finished_at "$out" $steps && return 0
  [ ! -f "$out/resume.pt" ] || again=--resume
  $VP pretrain "$@" --out "$out" --steps "$steps" --quiet $again
}
