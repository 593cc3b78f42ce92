#!/bin/sh
# expect.sh RC REGEX CMD [ARGS...]: runs CMD; passes iff it exits with RC and its output (stdout + stderr)
# matches the extended regex REGEX, with no crash or sanitizer report in it (a clean refusal, not luck).
rc_want=$1
re=$2
shift 2
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out" | tail -n 20
if [ "$rc" -ne "$rc_want" ]; then
  echo "expect.sh: exit code $rc, expected $rc_want"
  exit 1
fi
if ! printf '%s\n' "$out" | grep -Eq -- "$re"; then
  echo "expect.sh: the output does not match /$re/"
  exit 1
fi
if printf '%s\n' "$out" | grep -Eq 'Sanitizer|runtime error:|terminate called|Segmentation fault'; then
  echo "expect.sh: a crash or sanitizer report"
  exit 1
fi
exit 0
