# Shared by the scripts: install what is missing, say what is done.
say() { printf '\n==> %s\n' "$*"; }

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || {
    echo "cargo is missing: install Rust from your package manager or rustup" >&2
    exit 1
  }
}

# apt-get install, for root or through sudo, only for what is missing.
apt_install() {
  local missing=()
  for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
}

# Where cargo puts its output (honours CARGO_TARGET_DIR).
target_dir() { echo "${CARGO_TARGET_DIR:-$PWD/target}"; }

# On a machine that reaches no crates.io, Maven Central or npm registry, point cargo,
# Maven and npm at the package sets in ../shared/offline (when that folder exists).
# Elsewhere this does nothing.
use_offline_package_sets() {
  local activate="../shared/offline/activate.sh"
  [ -f "$activate" ] || return 0
  bash "$activate" --if-needed
}

# For the Swift packages' tests on Linux (scripts/test-swift.sh, examples-ios/test.sh,
# flutter/roomstate/ios/test.sh): finds swift (on PATH or in /opt/swift/usr/bin), or says
# that `$1` is skipped and returns 1. Then sets `libdir`, `ROOMSTATE_BIN` and
# `swift_flags`: the engine is a shared library in the cargo target folder; the linker
# finds it there, and the executables carry that folder as their run path
# (LD_LIBRARY_PATH for good measure).
swift_setup() {
  if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
  fi
  if ! command -v swift >/dev/null 2>&1; then
    echo "Swift is missing (no swift on PATH or in /opt/swift/usr/bin): skipping $1" >&2
    return 1
  fi
  libdir="$(target_dir)/debug"
  export ROOMSTATE_BIN="$libdir/roomstate"
  swift_flags=(-Xswiftc -warnings-as-errors -Xlinker -L"$libdir" -Xlinker -rpath -Xlinker "$libdir")
  export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

# Stops unless scripts/bindings.sh has built the engine and generated the Swift.
require_swift_bindings() {
  for built in "$libdir/libroomstate.so" "$libdir/roomstate" \
    bindings/swift/Sources/RoomState/Generated/RoomState.swift bindings/swift/Generated/RoomStateFFI/module.modulemap; do
    [ -e "$built" ] || { echo "$built is missing: run scripts/bindings.sh first" >&2; exit 1; }
  done
}

# Runs a Maven project's tests, then fails unless JUnit ran every `@Test` in its sources:
# JUnit 5 silently skips a test method that returns a value (a Kotlin `= runBlocking {..}`
# whose last expression is not Unit), so a green run could hide a test that never ran.
maven_test_all() {
  local project="$1" goal="$2"
  shift 2
  rm -rf "$project/target/surefire-reports" # a removed test class leaves its old report
  (cd "$project" && mvn -B --no-transfer-progress "$goal" "$@")
  local declared ran
  declared=$(grep -rhE '^\s*@Test\b' "$project/src/test" | wc -l)
  ran=$(grep -ohE '<testsuite [^>]*\btests="[0-9]+"' "$project"/target/surefire-reports/TEST-*.xml |
    grep -oE '\btests="[0-9]+"' | tr -dc '0-9\n' | awk '{ n += $1 } END { print n + 0 }')
  if [ "$declared" != "$ran" ]; then
    echo "$project: $declared @Test methods in src/test, but JUnit ran $ran (one returns a value?)" >&2
    return 1
  fi
  echo "$project: all $ran tests ran"
}
