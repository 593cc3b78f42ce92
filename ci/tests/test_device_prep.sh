#!/usr/bin/env bash
# ctest `ci_device_prep` (cpu): ci/device_prep.sh writes .commit only for a tree that is exactly a commit.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
mkdir "$work/repo" && cd "$work/repo"
git init -q . && git config user.email t@t && git config user.name t
mkdir ci && cp "$src/ci/device_prep.sh" ci/ && echo a > a.txt && git add . && git commit -qm one
ci/device_prep.sh > "$work/out.log" 2>&1 || fail "clean tree refused: $(cat "$work/out.log")"
[ "$(cat .commit)" = "$(git rev-parse --short=12 HEAD)" ] || fail ".commit is not HEAD"
ci/device_prep.sh > "$work/out.log" 2>&1 || fail "a tree with only .commit beside the commit was refused"
echo b >> a.txt
if ci/device_prep.sh > "$work/out.log" 2>&1; then fail "a modified file was accepted"; fi
grep -q 'a.txt' "$work/out.log" || fail "the modified file is not named: $(cat "$work/out.log")"
git checkout -q a.txt && echo new > new.txt
if ci/device_prep.sh > "$work/out.log" 2>&1; then fail "an untracked file was accepted"; fi
grep -q 'new.txt' "$work/out.log" || fail "the untracked file is not named"
rm new.txt && ci/device_prep.sh > "$work/out.log" 2>&1 && git add .commit && git commit -qm marker
if ci/device_prep.sh > "$work/out.log" 2>&1; then fail "a tracked .commit was accepted"; fi
grep -q 'tracked' "$work/out.log" || fail "the tracked .commit is not named: $(cat "$work/out.log")"
echo "ci_device_prep: OK"
