# Shared by .ci/tools.sh and .ci/release.sh (sourced after WORK is set): say a step, fail, and
# `expect STATUS CMD...`, which runs CMD, shows its output and fails unless it exits with STATUS;
# `contains REGEX` then tests that output.
say() { printf '\n--- %s\n' "$*"; }
fail() { printf 'FAILED: %s\n' "$*"; exit 1; }
expect() {
  local want=$1; shift
  printf '$ %s\n' "$*"
  set +e; "$@" >"$WORK/out" 2>&1; local got=$?; set -e
  # TensorFlow's start-up chatter dropped; a long output shortened to its head and tail
  grep -v -e '^WARNING: All log messages' -e '^I0000' -e '^E0000' -e 'cpu_feature_guard' -e '^To enable the following' "$WORK/out" > "$WORK/shown" || true
  if [ "$(wc -l < "$WORK/shown")" -gt 60 ]; then
    { head -5 "$WORK/shown"; echo "... ($(wc -l < "$WORK/shown") lines; the last 40:)"; tail -40 "$WORK/shown"; } | sed 's/^/  | /'
  else
    sed 's/^/  | /' "$WORK/shown"
  fi
  [ "$got" -eq "$want" ] || fail "exit status $got, expected $want: $*"
  echo "  (exit $got, as expected)"
}
contains() { grep -qE -- "$1" "$WORK/out" || fail "output lacks /$1/"; }
