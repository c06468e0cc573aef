#!/usr/bin/env bash
# Installs the Debian packages Lanepay needs to build and run (`run`) or also to test (`test`).
# Installs only what is missing; runs `apt-get update` once, and only if something is missing.
# Needs root or sudo when it has something to install.
set -euo pipefail

purpose="${1:-run}"

# To build: a C compiler for the bundled SQLite (rusqlite) and the linker Rust needs anyway;
# libudev for serialport; CMake and libclang for nfc1-sys, which builds its own libnfc.
build_packages=(gcc libc6-dev pkg-config libudev-dev cmake libclang1-14 libclang-common-14-dev)
# To run the cashier screen (iced on X11, CPU or Mesa rendering) and show Chinese text.
screen_packages=(libxkbcommon-x11-0 libxcursor1 libxrandr2 libxi6 libx11-xcb1 libgl1-mesa-dri
  libegl-mesa0 libegl1 fonts-dejavu-core fonts-noto-cjk)
# To test: Python with venv for schemathesis (the gateway's OpenAPI conformance run), openssl
# to show the gateway refuses TLS 1.1.
# The screen's end-to-end test: a virtual X server, real key events, screenshots read back
# with OCR.
test_packages=(python3 python3-venv openssl xvfb xauth xdotool imagemagick tesseract-ocr tesseract-ocr-eng)

case "$purpose" in
  run) wanted=("${build_packages[@]}" "${screen_packages[@]}") ;;
  test) wanted=("${build_packages[@]}" "${screen_packages[@]}" "${test_packages[@]}") ;;
  *) echo "usage: $0 [run|test]" >&2; exit 2 ;;
esac

missing=()
for package in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null; then
  as_root=(sudo)
else
  echo "install-deps: need root or sudo to install: ${missing[*]}" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
"${as_root[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
