# Parallel lanes for the study scripts (sourced): one job per core at a time, each job run once.
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
