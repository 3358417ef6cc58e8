#!/usr/bin/env bash
# Runs hushd's cargo-fuzz targets one after another, each for a fixed time, and prints how many
# inputs each one executed. Exits non-zero if any target crashed (or failed to build or run).
#
#   fuzz/run.sh [TARGET...] [--seconds N] [--sanitizer address|none] [-- LIBFUZZER_ARGS...]
#
# Without TARGETs every target `cargo fuzz list` knows is run. Defaults: 600 seconds each, the
# address sanitizer. Each target runs as ONE libFuzzer process (no -jobs/-workers), pinned to
# CPU 0 (or $FUZZ_CPU) with taskset where there is one, so the other core stays free.
#
# Corpora: the committed seeds in fuzz/corpus/TARGET are only read; what fuzzing finds goes to
# fuzz/work/TARGET (gitignored), which later runs start from. Crash reproducers go to
# fuzz/artifacts/TARGET/ (gitignored), logs to fuzz/work/logs/TARGET.log.
set -euo pipefail

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$FUZZ_DIR"

seconds=600
sanitizer="${FUZZ_SANITIZER:-address}"
targets=()
extra=()
usage() { sed -n '2,13p' "$FUZZ_DIR/run.sh" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
        --seconds=*) seconds="${1#*=}"; shift ;;
        --sanitizer|-s) sanitizer="${2:?--sanitizer needs a name}"; shift 2 ;;
        --sanitizer=*) sanitizer="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        -*) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
case "$seconds" in ''|*[!0-9]*) echo "run.sh: --seconds wants a whole number, not $seconds" >&2; exit 2 ;; esac

# cargo-fuzz needs nightly-only flags (-Zsanitizer, -Cpasses=sancov-module, ...). The toolchain
# here is stable, and RUSTC_BOOTSTRAP=1 lets stable accept them.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked
fi

if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
known="$(cargo fuzz list)"
for t in "${targets[@]}"; do
    if ! grep -qx -- "$t" <<<"$known"; then
        echo "run.sh: no fuzz target named $t (have: $(echo $known))" >&2
        exit 2
    fi
done

# One build dir per sanitizer, so switching between them does not rebuild everything.
target_dir="$FUZZ_DIR/target/$sanitizer"
fuzz_opts=(--sanitizer "$sanitizer" --target-dir "$target_dir")
echo "== building ${targets[*]} (sanitizer: $sanitizer)"
for t in "${targets[@]}"; do
    cargo fuzz build "${fuzz_opts[@]}" "$t"
done

# FUZZ_CPU picks the core (default 0), so two runs can go side by side on a quiet machine.
cpu="${FUZZ_CPU:-0}"
pin=()
if command -v taskset >/dev/null && taskset -c "$cpu" true 2>/dev/null; then
    pin=(taskset -c "$cpu")
fi

mkdir -p work/logs
failed=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "work/$t" "corpus/$t" "artifacts/$t"
    log="work/logs/$t.log"
    args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10)
    if [ -f "dict/$t.dict" ]; then
        args+=(-dict="dict/$t.dict")
    fi
    echo "== $t: ${seconds}s, log $FUZZ_DIR/$log"
    start=$(date +%s)
    set +e
    "${pin[@]}" cargo fuzz run "${fuzz_opts[@]}" "$t" "work/$t" "corpus/$t" -- "${args[@]}" "${extra[@]}" \
        >"$log" 2>&1
    rc=$?
    set -e
    elapsed=$(( $(date +%s) - start ))
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    if [ -z "$execs" ]; then
        # A crash ends the run before the final stats; take the last status line's count.
        execs="$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')"
    fi
    done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)"
    if [ "$rc" -eq 0 ]; then
        result="ok"
        [ -n "$done_line" ] && echo "$done_line"
    else
        failed=1
        result="FAILED (exit $rc)"
        echo "!! $t failed; the end of its log:" >&2
        grep -vE '^[[:space:]]+(at |[0-9]+: )' "$log" | tail -n 40 >&2
        find "artifacts/$t" -type f -newermt "@$start" | sed "s|^|   reproducer: $FUZZ_DIR/|" >&2
    fi
    echo "$t: ${execs:-?} executions in ${elapsed}s: $result"
    summary+=("$(printf '%-16s %12s %8ss  %s' "$t" "${execs:-?}" "$elapsed" "$result")")
done

echo
printf '%-16s %12s %9s  %s\n' target executions time result
printf '%s\n' "${summary[@]}"
exit "$failed"
