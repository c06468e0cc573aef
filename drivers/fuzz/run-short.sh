#!/usr/bin/env bash
# A short fuzz run of every drivers fuzz target, for CI: each target for FUZZ_SECONDS (20 s by
# default) with libFuzzer; a crash fails the script and leaves the input in artifacts/<target>/.
#
# cargo-fuzz needs a nightly toolchain. When nightly or cargo-fuzz cannot be had (no rustup, no
# network), the script says so plainly and exits 0: the stable suite still runs the same parsers
# through proptests (drivers/tests/serial_devices.rs `parsers`), so CI is not blocked by a
# missing toolchain.
#
# Usage: drivers/fuzz/run-short.sh            (every target, 20 s each)
#        FUZZ_SECONDS=300 drivers/fuzz/run-short.sh scanner_framing
# The build goes to CARGO_TARGET_DIR when it is set, else drivers/fuzz/target.
set -euo pipefail

cd "$(dirname "$0")"
seconds_per_target="${FUZZ_SECONDS:-20}"

say() { printf 'fuzz: %s\n' "$*"; }

if ! command -v rustup >/dev/null 2>&1; then
    say "rustup is not installed, so no nightly toolchain for cargo-fuzz: fuzzing SKIPPED"
    exit 0
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    say "installing the nightly toolchain (cargo-fuzz needs it)"
    if ! rustup toolchain install nightly --profile minimal; then
        say "cannot install a nightly toolchain here: fuzzing SKIPPED"
        exit 0
    fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    if ! cargo install cargo-fuzz --locked; then
        say "cannot install cargo-fuzz here: fuzzing SKIPPED"
        exit 0
    fi
fi

# The drivers are safe Rust (the workspace forbids unsafe), so AddressSanitizer finds nothing a
# panic would not; building without it halves the build. libFuzzer still reports every panic,
# and debug assertions (overflow checks) stay on.
sanitizer=(--sanitizer none)

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
    say "no fuzz targets found"
    exit 1
fi

started=$SECONDS
say "building ${#targets[@]} targets with $(rustup run nightly rustc --version)"
mkdir -p artifacts
if ! cargo +nightly fuzz build "${sanitizer[@]}" >artifacts/build.log 2>&1; then
    tail -n 30 artifacts/build.log
    say "build FAILED (log in drivers/fuzz/artifacts/build.log)"
    exit 1
fi
say "built in $((SECONDS - started)) s"

failed=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    target_started=$SECONDS
    # -max_total_time bounds the run; -rss_limit_mb catches a parser that grows without bound.
    if cargo +nightly fuzz run "${sanitizer[@]}" "$target" -- \
        -max_total_time="$seconds_per_target" -rss_limit_mb=2048 -print_final_stats=1 \
        >"artifacts/$target/last-run.log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "artifacts/$target/last-run.log" |
            grep -o '[0-9]*$' || echo "?")
        say "$target PASS ($runs inputs in $((SECONDS - target_started)) s)"
    else
        say "$target FAILED: crash input and log in drivers/fuzz/artifacts/$target/"
        grep -E 'panicked|SUMMARY|Test unit written' "artifacts/$target/last-run.log" | head -n 5 || true
        failed+=("$target")
    fi
done

say "done in $((SECONDS - started)) s"
if [ "${#failed[@]}" -gt 0 ]; then
    say "FAILED targets: ${failed[*]}"
    exit 1
fi
