#!/usr/bin/env bash
# Checks the proto module (proto/, see proto/buf.yaml) as a contract:
#   1. the vendored upstream files in proto/grpc/ are still byte-for-byte upstream's;
#   2. `buf lint` is clean;
#   3. `buf breaking` (wire + JSON compatibility) finds nothing against each released state:
#      - RELEASED below: the protos every client so far was built against (main before the module
#        was checked), pinned by commit so that a batch of commits cannot drift away from it step by
#        step, however it is merged;
#      - HEAD~1, the first-parent previous commit: on main that is the previous state of main (for a
#        merge, main before the merge), so what was added since RELEASED is held to the same promise;
#      - HEAD, which differs from the work tree only before a commit: a local run then checks the
#        change about to be committed, too (on CI it is the same tree, and passes).
# Both are read with `git archive`, which needs the commits in this clone: in a shallow clone or
# without them the check fails and says so; it never skips. Needs buf from `npm ci --prefix tests/tools`.
set -euo pipefail
cd "$(dirname "$0")/.."

RELEASED=fb15802e699d65688571c2e348847fe177ec168a

buf=tests/tools/node_modules/.bin/buf
fail() {
  echo "proto-check: $*" >&2
  exit 1
}
[ -x "$buf" ] || fail "no $buf; install the test tools first: npm ci --prefix tests/tools"

# 1. Vendored files: every file listed has upstream's bytes, and every file there is listed.
(cd proto && sha256sum --check --strict --quiet grpc/UPSTREAM.sha256) ||
  fail "proto/grpc/ differs from upstream (proto/grpc/UPSTREAM.sha256)"
unlisted=$(cd proto && find grpc -name '*.proto' | sort |
  comm -23 - <(grep -v '^#' grpc/UPSTREAM.sha256 | awk '{print $2}' | sort))
[ -z "$unlisted" ] || fail "not in proto/grpc/UPSTREAM.sha256: $unlisted"

# 2. Lint.
"$buf" lint proto
echo "proto-check: buf lint proto: clean"

# 3. Breaking changes, against each released state (once per distinct proto/ tree).
commit_of() {
  git rev-parse --verify --quiet "$1^{commit}" || {
    if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
      fail "$2 ($1) is not in this shallow clone; fetch the history: git fetch --unshallow"
    fi
    fail "$2 ($1) is not in this repository's history"
  }
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
checked=" "
for against in "RELEASED:$RELEASED" "HEAD~1:HEAD~1" "HEAD:HEAD"; do
  name=${against%%:*}
  rev=$(commit_of "${against#*:}" "$name")
  tree=$(git rev-parse "$rev:proto")
  case $checked in *" $tree "*)
    echo "proto-check: $name (${rev:0:12}) has the same proto/ as one already checked"
    continue ;;
  esac
  checked="$checked$tree "
  mkdir "$tmp/$tree"
  git archive "$rev" proto | tar -x -C "$tmp/$tree"
  "$buf" breaking proto --against "$tmp/$tree/proto" ||
    fail "proto/ breaks wire or JSON compatibility with $name (${rev:0:12}); see above"
  echo "proto-check: buf breaking proto against $name (${rev:0:12}): compatible"
done
