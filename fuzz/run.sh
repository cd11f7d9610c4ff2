#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and prints executions per
# target. Used by `make fuzz` (60 s each) and `make fuzz-smoke` (a few s).
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# cargo fuzz needs unstable rustc flags (-Zsanitizer=address, sancov). A
# machine has only the stable toolchain, so by default it runs with
# RUSTC_BOOTSTRAP=1 on the default toolchain (verified: builds and fuzzes
# with ASan); FUZZ_TOOLCHAIN=nightly uses `cargo +nightly` instead.
#
# New corpus entries go to fuzz/target/corpus/<target> (not committed); the
# committed seeds in fuzz/corpus/<target> are read only. A crash is saved
# under fuzz/artifacts/<target>/ by libFuzzer; the script then fails, after
# running the remaining targets. Keep a crash as a regression by copying it
# to fuzz/regressions/<target>/ (replayed by tests/fuzz_regressions.rs).
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(bundle_open bundle_compile apikey cidr decision model_scan usage)
fi

cargo=(cargo)
if [[ -n "${FUZZ_TOOLCHAIN:-}" ]]; then
  cargo=(cargo "+$FUZZ_TOOLCHAIN")
else
  export RUSTC_BOOTSTRAP=1
fi

start=$(date +%s)
"${cargo[@]}" fuzz build
built=$(date +%s)

mkdir -p target/logs
declare -A execs status
failed=()
for t in "${targets[@]}"; do
  mkdir -p "target/corpus/$t" "corpus/$t"
  log="target/logs/$t.log"
  dict=()
  [[ -f "dict/$t.dict" ]] && dict=("-dict=dict/$t.dict")
  echo "fuzz: $t for ${seconds}s (log: fuzz/$log)"
  if "${cargo[@]}" fuzz run "$t" "target/corpus/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
      -print_final_stats=1 "${dict[@]}" >"$log" 2>&1; then
    status[$t]=ok
  else
    status[$t]=FAILED
    failed+=("$t")
    grep -E "panicked at|^thread '|Test unit written to|SUMMARY|ERROR" "$log" | head -20 || true
  fi
  execs[$t]=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
done

echo
printf '%-16s %12s %8s %s\n' target executions corpus status
for t in "${targets[@]}"; do
  printf '%-16s %12s %8s %s\n' "$t" "${execs[$t]:-?}" "$(find "target/corpus/$t" "corpus/$t" -type f | wc -l)" "${status[$t]}"
done
end=$(date +%s)
echo "fuzz: ${seconds}s per target; build $((built - start))s, total $((end - start))s"
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]} (crash inputs under fuzz/artifacts/; logs under fuzz/target/logs/)" >&2
  exit 1
fi
