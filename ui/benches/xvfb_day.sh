#!/usr/bin/env bash
# The real `lanepay-ui demo` (release) on a virtual X display through a 500-line day typed with
# xdotool (100 sales of 5 items, each paid with exact cash), then the app's resident memory
# (VmRSS now, VmHWM the peak) and the sales in its journal. Needs Xvfb, xdotool and sqlite3's
# Python module (python3); run from the repository root:
#   cargo build --release -p lanepay-ui && ui/benches/xvfb_day.sh
set -euo pipefail

target="${CARGO_TARGET_DIR:-target}"
app="$target/release/lanepay-ui"
display=":$(( 90 + RANDOM % 300 ))"
work="$(mktemp -d)"
# Only the processes this script started (never `kill 0`, which is the caller's whole group).
trap 'kill ${app_pid:+"$app_pid"} ${xvfb_pid:+"$xvfb_pid"} 2>/dev/null || true; rm -rf "$work"' EXIT

Xvfb "$display" -screen 0 1920x1080x24 -nolisten tcp >/dev/null 2>&1 &
xvfb_pid=$!
export DISPLAY="$display"
tries=0
until xdotool getdisplaygeometry >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -gt 100 ]; then echo "Xvfb did not start on $display" >&2; exit 1; fi
  sleep 0.1
done

state="$work/state.txt"
ICED_BACKEND=tiny-skia LANEPAY_LOG=warn "$app" demo --language en --data "$work/data" \
  --state-file "$state" >"$work/out.log" 2>"$work/err.log" &
app_pid=$!

wait_state() {
  local tries=0
  until grep -qx "$1" "$state" 2>/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -gt 600 ]; then echo "gave up waiting for $1" >&2; cat "$state" >&2; exit 1; fi
    sleep 0.1
  done
}
line() { xdotool type --delay 4 "$1"; xdotool key Return; }

wait_state "screen=sign_in"
window="$(xdotool search --name "Lanepay checkout" | head -1)"
xdotool windowfocus --sync "$window"
line 1001
line 1234
wait_state "screen=open_shift"
line 500
wait_state "screen=sale"
rss_kb() { awk "/^$1:/ {print \$2}" "/proc/$app_pid/status"; }
start_kb="$(rss_kb VmRSS)"

codes=(6901234567892 6920000000012 6930000000011 6940000000010 96385074)
for sale in $(seq 1 100); do
  for code in "${codes[@]}"; do line "$code"; done
  wait_state "lines=5"
  xdotool key F5
  wait_state "screen=cash"
  xdotool key Return
  wait_state "lines=0"
  wait_state "screen=sale"
done

sales="$(python3 - "$work/data/lane/lane.db" <<'PY'
import sqlite3, sys
conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(conn.execute("SELECT count(*) FROM journal WHERE kind = 'sale_completed'").fetchone()[0])
PY
)"
echo "| measure | value |"
echo "|---|---|"
echo "| sales completed (journal) | $sales |"
echo "| VmRSS after sign-in | $((start_kb / 1024)) MB |"
echo "| VmRSS after the 500-line day | $(( $(rss_kb VmRSS) / 1024 )) MB |"
echo "| VmHWM (peak) | $(( $(rss_kb VmHWM) / 1024 )) MB |"
