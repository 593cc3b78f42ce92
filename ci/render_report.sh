#!/usr/bin/env bash
# Renders a `tegemma report` HTML file in headless Chromium (Debian's `chromium`) to a PNG screenshot of the
# whole page, so a person can look at what users see. Installs chromium with apt-get when it is missing (as
# ci/deps.sh does for the build dependencies).
#
#   ci/render_report.sh REPORT.html OUT.png [--width PX] [--slices]
#
#   --width PX   the browser window width (default 1280)
#   --slices     also write OUT-01.png, OUT-02.png, ...: the page cut into window-high pieces (1600 px), which
#                are easier to look at in full resolution than one very tall image
#
# The page height is measured first by Chromium itself on a temporary copy that carries one line of script
# (the report has none); the screenshot is then taken of the report file unchanged, with the window as tall as
# the page (capped at 16000 px; beyond that only the top of the page is in OUT.png, and --slices has the rest).
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
html=$1 out=$2
shift 2
width=1280 slices=0
while [ $# -gt 0 ]; do
  case $1 in
    --width) width=${2:?--width needs a value}; shift 2 ;;
    --slices) slices=1; shift ;;
    -h|--help) usage ;;
    *) echo "render_report: unknown option $1" >&2; exit 2 ;;
  esac
done
[ -f "$html" ] || { echo "render_report: $html: no such file" >&2; exit 2; }

if ! command -v chromium >/dev/null 2>&1; then
  echo "render_report: installing chromium (apt-get)" >&2
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      chromium fonts-dejavu-core; } >/tmp/tegemma-apt-chromium.log 2>&1 ||
    { echo "render_report: apt-get could not install chromium; see /tmp/tegemma-apt-chromium.log" >&2; exit 2; }
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
abs_html=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
mkdir -p "$(dirname "$out")"
out_abs=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")

# --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start. Nothing here is fetched: the
# report is self-contained, and --dump-dom / --screenshot only load the local file.
chrome() {
  timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --mute-audio \
    --user-data-dir="$tmp/profile" "$@" 2>>"$tmp/chromium.log"
}

# 1. The page height at this width.
sed 's|</body>|<script>document.title="tegemma-height="+document.documentElement.scrollHeight;</script></body>|' \
  "$abs_html" >"$tmp/measure.html"
height=$(chrome --window-size="$width,1000" --dump-dom "file://$tmp/measure.html" |
  sed -n 's/.*<title>tegemma-height=\([0-9]*\)<\/title>.*/\1/p' | head -1)
if [ -z "$height" ]; then
  echo "render_report: could not measure the page height; chromium said:" >&2
  tail -5 "$tmp/chromium.log" >&2
  exit 1
fi
shot_h=$(( height > 16000 ? 16000 : height ))

# 2. The whole page, from the report file as users open it.
chrome --window-size="$width,$shot_h" --screenshot="$out_abs" "file://$abs_html" >/dev/null
[ -s "$out_abs" ] || { echo "render_report: no screenshot written; chromium said:" >&2; tail -5 "$tmp/chromium.log" >&2; exit 1; }
echo "render_report: $out ($width x $shot_h px; page height $height px)"

# 3. Optional slices: copies of the page shifted up by k window heights.
if [ "$slices" -eq 1 ]; then
  slice_h=1600
  n=$(( (height + slice_h - 1) / slice_h ))
  for k in $(seq 1 "$n"); do
    off=$(( (k - 1) * slice_h ))
    sed "s|</head>|<style>body{margin-top:-${off}px}</style></head>|" "$abs_html" >"$tmp/slice.html"
    name="${out_abs%.png}-$(printf %02d "$k").png"
    chrome --window-size="$width,$slice_h" --screenshot="$name" "file://$tmp/slice.html" >/dev/null
    echo "render_report: ${name}"
  done
fi
