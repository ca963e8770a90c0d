#!/usr/bin/env bash
# Runs every fuzzing campaign of the repository for a fixed time each, one after the other, on
# the corpora kept in the repository, then minimises each corpus and prints a summary. Not run
# by CI: it takes minutes per target. See fuzz/README.md.
#
#   fuzz/run.sh                       # every campaign, 5 minutes each
#   FUZZ_SECONDS=60 fuzz/run.sh       # 1 minute each
#   fuzz/run.sh http_api decoder      # only these targets
#
# Environment:
#   FUZZ_SECONDS    seconds per campaign (default 300)
#   FUZZ_SANITIZER  address (default) or none (faster; panics and invariants are still checked)
#   FUZZ_CMIN       1 (default): minimise each corpus after its run (every edge kept); 0: keep
#                   everything found
#   FUZZ_LOGS       where the logs go (default target/fuzz-logs, outside git)
#   CARGO_TARGET_DIR  shared by the three fuzz crates if set (they have their own workspaces)
#
# Only the stable toolchain is needed: cargo-fuzz's nightly-only flags (-Zsanitizer, -Cpasses)
# are accepted by stable rustc with RUSTC_BOOTSTRAP=1, which this script sets for cargo-fuzz.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_EACH=${FUZZ_SECONDS:-300}
SANITIZER=${FUZZ_SANITIZER:-address}
CMIN=${FUZZ_CMIN:-1}
LOGS=${FUZZ_LOGS:-$ROOT/target/fuzz-logs}

# Every campaign: the fuzz crate's folder and the target's name.
CAMPAIGNS=(
    "fuzz http_api"
    "fuzz raw_json"
    "protocol/fuzz frame_decoder"
    "protocol/fuzz handshake"
    "stomp/fuzz decoder"
)

if ! command -v cargo-fuzz >/dev/null; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
mkdir -p "$LOGS"

selected() {
    [ $# -eq 0 ] && return 0
    local name=$1
    shift
    for wanted in "$@"; do [ "$wanted" = "$name" ] && return 0; done
    return 1
}

# The last value of a libFuzzer statistic in a log ("stat::name: value" or "name: value").
figure() { grep -Eo "$2:? *[0-9]+" "$1" | tail -1 | grep -Eo '[0-9]+$' || echo '?'; }

# Minimises a corpus in place, keeping the hand-written seed-* files under their names. Only
# edges count (-use_counters=0): keeping every hit-count bucket keeps thousands of files.
minimise() {
    local target=$1 corpus=$2 seeds
    seeds=$(mktemp -d)
    cp "$corpus"/seed-* "$seeds"/ 2>/dev/null || true
    cargo fuzz cmin --sanitizer "$SANITIZER" "$target" "$corpus" -- -use_counters=0 \
        >>"$LOGS/$target.cmin.log" 2>&1
    cp "$seeds"/* "$corpus"/ 2>/dev/null || true
    rm -rf "$seeds"
}

SUMMARY=()
FAILED=0
for campaign in "${CAMPAIGNS[@]}"; do
    read -r dir target <<<"$campaign"
    selected "$target" "$@" || continue
    corpus="$ROOT/$dir/corpus/$target"
    log="$LOGS/$target.log"
    mkdir -p "$corpus"
    echo "== $dir $target: ${SECONDS_EACH}s (log: $log)" >&2
    status=ok
    (
        cd "$ROOT/$dir"
        # One process: -jobs/-workers would only add processes (and send output to files).
        cargo fuzz run --sanitizer "$SANITIZER" "$target" "$corpus" -- \
            -max_total_time="$SECONDS_EACH" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1
    ) >"$log" 2>&1 || status=FAILED
    if [ "$status" = FAILED ]; then
        FAILED=1
        crashes=$(ls "$ROOT/$dir/artifacts/$target" 2>/dev/null | wc -l)
    else
        crashes=0
        [ "$CMIN" = 1 ] && (cd "$ROOT/$dir" && minimise "$target" "$corpus")
    fi
    files=$(find "$corpus" -type f | wc -l)
    bytes=$(du -sb "$corpus" | cut -f1)
    SUMMARY+=("$(printf '%-14s %-8s %12s %8s %8s %8s %9s %8s' "$target" "$status" \
        "$(figure "$log" number_of_executed_units)" "$(figure "$log" average_exec_per_sec)" \
        "$(figure "$log" cov)" "$(figure "$log" ft)" "$files/$((bytes / 1024))K" "$crashes")")
done

echo
printf '%-14s %-8s %12s %8s %8s %8s %9s %8s\n' target status execs exec/s cov ft corpus crashes
printf '%s\n' "${SUMMARY[@]}"
echo "(corpus: files/size after minimising; logs in $LOGS; crashes in <crate>/artifacts/<target>)"
exit "$FAILED"
