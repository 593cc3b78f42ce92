#!/usr/bin/env bash
# Before a device call from this working tree (the device tool copies the tree without .git): refuses unless the
# tree is exactly a commit (no modified, staged or untracked-and-not-ignored file besides .commit), then writes that
# commit into .commit, which gpu_session.sh / gpu_suite.sh / the bench context report as the commit measured.
# Session 6 learned why: a helper's uncommitted edits travelled with a call labelled with the last commit.
#
#   ci/device_prep.sh [DIR]     (exit 0: ready, .commit written; exit 1: the tree is not a commit, files listed)
set -uo pipefail
dir=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$dir" || exit 2
if git ls-files --error-unmatch .commit > /dev/null 2>&1; then  # session 10: a `git add -A` committed it
  echo "device_prep: .commit is tracked by git; it must stay an untracked marker: git rm --cached .commit, commit" >&2
  exit 1
fi
dirty=$(git status --porcelain --untracked-files=all | grep -v '^?? \.commit$')
if [ -n "$dirty" ]; then
  echo "device_prep: $dir is not a clean commit; commit or stash these first:" >&2
  echo "$dirty" >&2
  exit 1
fi
git rev-parse --short=12 HEAD > .commit
echo "device_prep: .commit = $(cat .commit)"
