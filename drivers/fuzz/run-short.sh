#!/usr/bin/env bash
# A short fuzz run of every drivers fuzz target (CI runs it from .ci/run): each target for
# FUZZ_SECONDS (10 s by default) with libFuzzer. A crash fails the script and leaves the input
# and the log in drivers/fuzz/artifacts/<target>/.
#
# The targets are cargo-fuzz targets (libfuzzer-sys); `cargo +nightly fuzz run <target>` works
# for long local runs with AddressSanitizer. This script builds them the way `cargo fuzz build
# --sanitizer none` does (the same SanitizerCoverage flags, `--cfg fuzzing`, debug assertions and
# overflow checks, release profile), but with the stable toolchain the workspace already uses:
# no nightly and no cargo-fuzz to install in CI. The drivers are safe Rust (the workspace forbids
# unsafe), so AddressSanitizer would find nothing a panic does not; libFuzzer reports every
# panic as a crash. Only the parsers are built (lanepay-drivers without libnfc and camera), so
# the build takes about two minutes.
#
# Usage: drivers/fuzz/run-short.sh                       (every target, 10 s each)
#        FUZZ_SECONDS=300 drivers/fuzz/run-short.sh scanner_framing
# The build goes to $CARGO_TARGET_DIR/fuzz when CARGO_TARGET_DIR is set, else drivers/fuzz/target.
set -euo pipefail

cd "$(dirname "$0")"
seconds_per_target="${FUZZ_SECONDS:-10}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
target_dir="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}"
target_dir="${target_dir:-$PWD/target}"

say() { printf 'fuzz: %s\n' "$*"; }

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^lanepay-drivers-fuzz$')
fi
if [ "${#targets[@]}" -eq 0 ]; then
    say "no fuzz targets found in drivers/fuzz/Cargo.toml"
    exit 1
fi

# What cargo-fuzz passes to rustc for `--sanitizer none`.
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks"

started=$SECONDS
say "building ${#targets[@]} targets with $(rustc --version)"
mkdir -p artifacts
if ! cargo build --release --locked --target "$triple" --target-dir "$target_dir" --bins \
    >artifacts/build.log 2>&1; then
    tail -n 30 artifacts/build.log
    say "build FAILED (log in drivers/fuzz/artifacts/build.log)"
    exit 1
fi
say "built in $((SECONDS - started)) s"

# New inputs libFuzzer finds go to a scratch corpus, so a run never changes the checkout;
# drivers/fuzz/corpus/<target> (kept locally, not committed) seeds it when present.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in "${targets[@]}"; do
    mkdir -p "artifacts/$target" "$scratch/$target"
    seeds=()
    [ -d "corpus/$target" ] && seeds=("corpus/$target")
    target_started=$SECONDS
    # -max_total_time bounds the run; -rss_limit_mb catches a parser that grows without bound.
    if "$target_dir/$triple/release/$target" "$scratch/$target" "${seeds[@]}" \
        -max_total_time="$seconds_per_target" -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$target/" >"artifacts/$target/last-run.log" 2>&1; then
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
