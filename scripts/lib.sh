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
