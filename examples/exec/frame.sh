#!/bin/sh
# An external analysis for iaserve's `exec` (docs/exec.md), in POSIX sh: it
# outlines the middle of the slide (--margin percent from each edge) and
# reports the slide's size. Real programs (a Python model, say) follow the
# same protocol: read the JSON job on stdin, print JSON lines on stdout,
# talk on stderr.
#
#   [[apps]]
#   analysis = "exec"
#   [apps.params]
#   command = "/opt/iaserve/examples/exec/frame.sh"
#   args = "--margin 25"
set -eu
margin=25
while [ $# -gt 0 ]; do
  case "$1" in
    --margin) margin=$2; shift 2 ;;
    *) echo "frame.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

job=$(cat)
# The slide's level-0 size: the first "width"/"height" of the "slide" object.
slide=${job#*\"slide\":}
width=$(printf '%s' "$slide" | sed -n 's/^[^}]*"width":\([0-9]*\).*/\1/p')
height=$(printf '%s' "$slide" | sed -n 's/^[^}]*"height":\([0-9]*\).*/\1/p')
if [ -z "$width" ] || [ -z "$height" ]; then
  echo "frame.sh: no slide size in the job" >&2
  exit 3
fi
echo "frame.sh: slide ${width} x ${height} px" >&2
echo '{"progress": 50}'

x0=$((width * margin / 100)); x1=$((width - x0))
y0=$((height * margin / 100)); y1=$((height - y0))
printf '{"result": {"displayResult": "Slide %s x %s px", ' "$width" "$height"
printf '"displayProperties": {"Width (px)": %s, "Height (px)": %s, "Margin (%%)": %s}, ' "$width" "$height" "$margin"
printf '"polygons": [{"points": [[%s,%s],[%s,%s],[%s,%s],[%s,%s]], "label": "middle"}]}}\n' \
  "$x0" "$y0" "$x1" "$y0" "$x1" "$y1" "$x0" "$y1"
