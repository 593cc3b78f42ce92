#!/usr/bin/env bash
# Renders a `tegemma report` HTML file in headless Chromium (Debian's `chromium`) to a PNG screenshot of the
# whole page, so a person can look at what users see. Installs chromium with apt-get when it is missing (as
# ci/deps.sh does for the build dependencies).
#
#   ci/render_report.sh REPORT.html OUT.png [--width PX] [--slices]
#
#   --width PX   the browser window width (default 1280, widened when a wide table would be cut, see below)
#   --slices     also write OUT-01.png, OUT-02.png, ...: the page cut into window-high pieces (1600 px), which
#                are easier to look at in full resolution than one very tall image
#
# The page is measured first by Chromium itself on a temporary copy that carries one line of script (the report
# has none): its height, and how far the widest scrolling box (a wide table) reaches past its visible width.
# Without --width, a window too narrow to show such a box whole is widened until it does (up to 2560 px), so the
# PNG has every column; with --width the width is kept and the cut is reported. The screenshot is then taken of
# the report file unchanged, with the window as tall as the page: one image up to 40000 px (headless Chromium
# renders windows of that height; tried with 40000), and a taller page continues in OUT-part2.png, OUT-part3.png...
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 2 ] || usage
html=$1 out=$2
shift 2
width=1280 slices=0 fixed_width=0
while [ $# -gt 0 ]; do
  case $1 in
    --width) width=${2:?--width needs a value}; fixed_width=1; shift 2 ;;
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

# 1. The page height at this width, and the widest cut of a scrolling box (scrollWidth - clientWidth, px).
measure_js='var c=0;document.querySelectorAll(".scroll").forEach(function(e){c=Math.max(c,e.scrollWidth-e.clientWidth)});'
measure_js+='document.title="tegemma-height="+document.documentElement.scrollHeight+";cut="+c;'
sed "s|</body>|<script>${measure_js}</script></body>|" "$abs_html" >"$tmp/measure.html"
measure() {
  local t
  t=$(chrome --window-size="$1,1000" --dump-dom "file://$tmp/measure.html" |
    sed -n 's/.*<title>tegemma-height=\([0-9]*\);cut=\([0-9]*\)<\/title>.*/\1 \2/p' | head -1)
  if [ -z "$t" ]; then
    echo "render_report: could not measure the page; chromium said:" >&2
    tail -5 "$tmp/chromium.log" >&2
    exit 1
  fi
  read -r height cut <<<"$t"
}
measure "$width"
# A wide table's box grows with the window (up to the window width minus 40 px): widen until nothing is cut.
for _ in 1 2 3; do
  [ "$cut" -gt 0 ] && [ "$fixed_width" -eq 0 ] && [ "$width" -lt 2560 ] || break
  width=$(( width + cut + 8 > 2560 ? 2560 : width + cut + 8 ))
  measure "$width"
done
[ "$cut" -eq 0 ] ||
  echo "render_report: a scrolling box is $cut px wider than the window shows at $width px: its right part is not in the PNG" >&2

# 2. The whole page, from the report file as users open it; past max_h px the page continues in OUT-partK.png
#    (copies of the page shifted up by (K-1) x max_h px).
max_h=40000
shot_h=$(( height > max_h ? max_h : height ))
chrome --window-size="$width,$shot_h" --screenshot="$out_abs" "file://$abs_html" >/dev/null
[ -s "$out_abs" ] || { echo "render_report: no screenshot written; chromium said:" >&2; tail -5 "$tmp/chromium.log" >&2; exit 1; }
echo "render_report: $out ($width x $shot_h px; page height $height px)"
parts=$(( (height + max_h - 1) / max_h ))
for k in $(seq 2 "$parts"); do
  off=$(( (k - 1) * max_h ))
  part_h=$(( height - off > max_h ? max_h : height - off ))
  sed "s|</head>|<style>body{margin-top:-${off}px}</style></head>|" "$abs_html" >"$tmp/part.html"
  name="${out_abs%.png}-part${k}.png"
  chrome --window-size="$width,$part_h" --screenshot="$name" "file://$tmp/part.html" >/dev/null
  echo "render_report: ${name} (the page from $off px on)"
done

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
