# shellcheck shell=bash
# shellcheck disable=SC2034 # the package lists and paths are used by the scripts that source this
# Helpers shared by scripts/up, scripts/down and scripts/test. Source it; it has no side effects
# beyond defining variables and functions.

# ---------------------------------------------------------------------------------------------
# Where things are
# ---------------------------------------------------------------------------------------------
MUON_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
MUON_BUILD_DIR=$(realpath -m -- "${MUON_BUILD_DIR:-$MUON_ROOT/build}") # MUON_BUILD_DIR: another build dir
MUON_BIN_DIR="$MUON_BUILD_DIR/bin"

# The local stack's state (NATS store, PostgreSQL data, logs, pid files, stack.env).
# MUON_STATE_DIR overrides the default <repo>/.muon; a relative path is taken from the caller's cwd.
muon_state_dir() {
  local dir=${MUON_STATE_DIR:-$MUON_ROOT/.muon}
  [[ $dir == /* ]] || dir="$PWD/$dir"
  # Normalise without requiring the directory to exist (realpath -m), so messages show one path.
  dir=$(realpath -m -- "$dir")
  if [[ $dir =~ [[:space:]\'\"] ]]; then
    die "state dir '$dir' contains whitespace or quotes; set MUON_STATE_DIR to a plain path"
  fi
  [[ $dir != / ]] || die "MUON_STATE_DIR must not be /"
  printf '%s\n' "$dir"
}

# ---------------------------------------------------------------------------------------------
# Debian packages (one place; docker/Dockerfile installs from these lists too)
# ---------------------------------------------------------------------------------------------
# To compile everything.
MUON_BUILD_PACKAGES=(
  cmake ninja-build g++ pkg-config
  libnats-dev libprotobuf-dev protobuf-compiler libboost-dev libpqxx-dev libpq-dev libfmt-dev
  catch2 libsodium-dev libssl-dev libyaml-cpp-dev libarchive-dev
)
# To run the local stack (scripts/up) and the integration tests, which start real servers.
# git: the builder clones repositories; bubblewrap: sandbox for build steps and instances;
# openssl: scripts/deploy-examples signs its push webhook.
MUON_RUN_PACKAGES=(nats-server postgresql bubblewrap git curl openssl)
# Only for tests: docker-compose validates compose.yaml (no Docker engine is needed for that);
# openssl makes the certificate of the HTTPS test; clang brings libFuzzer for the fuzz tier.
MUON_TEST_PACKAGES=(docker-compose openssl clang libclang-rt-14-dev)
# Only for benchmarks (never installed by scripts/test).
MUON_BENCH_PACKAGES=(wrk nginx-light)
# Shared libraries the service binaries need at run time (container images; see docker/Dockerfile).
MUON_RUNTIME_LIB_PACKAGES=(
  ca-certificates libnats3.4 libprotobuf32 libpqxx-6.4 libpq5 libfmt9 libsodium23 libyaml-cpp0.7
  libarchive13 libssl3
)

# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------
if [[ -t 2 && -z ${NO_COLOR:-} ]]; then
  _c_bold=$'\e[1m' _c_green=$'\e[32m' _c_yellow=$'\e[33m' _c_red=$'\e[31m' _c_off=$'\e[0m'
else
  _c_bold='' _c_green='' _c_yellow='' _c_red='' _c_off=''
fi
MUON_SCRIPT=${MUON_SCRIPT:-$(basename -- "$0")}

step() { printf '%s==> %s%s\n' "$_c_bold" "$*" "$_c_off" >&2; }
ok() { printf '    %sok%s %s\n' "$_c_green" "$_c_off" "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
warn() { printf '%swarning:%s %s\n' "$_c_yellow" "$_c_off" "$*" >&2; }
die() {
  printf '%s%s: error:%s %s\n' "$_c_red" "$MUON_SCRIPT" "$_c_off" "$*" >&2
  exit 1
}

# Shows a path relative to the repository root when it is inside it.
muon_rel() {
  local p=$1
  if [[ $p == "$MUON_ROOT"/* ]]; then printf '%s\n' "${p#"$MUON_ROOT"/}"; else printf '%s\n' "$p"; fi
}

# Prints the last lines of a log file, indented, to stderr (for failure messages).
muon_log_tail() {
  local file=$1 lines=${2:-30}
  if [[ -r $file ]]; then
    printf '    --- last %s lines of %s ---\n' "$lines" "$file" >&2
    tail -n "$lines" -- "$file" | sed 's/^/    | /' >&2
    printf '    ---\n' >&2
  else
    printf '    (no log at %s)\n' "$file" >&2
  fi
}

# ---------------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------------
muon_package_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# Prints the packages of the arguments that are not installed, one a line.
muon_missing_packages() {
  local p
  for p in "$@"; do
    muon_package_installed "$p" || printf '%s\n' "$p"
  done
}

# muon_install_packages <package...>: installs the ones that are missing (apt-get update first,
# only then). Works offline when nothing is missing. Uses sudo when not root.
muon_install_packages() {
  command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: Muon's scripts need Debian 12"
  local missing
  mapfile -t missing < <(muon_missing_packages "$@")
  ((${#missing[@]})) || return 0
  step "Installing missing Debian packages: ${missing[*]}"
  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 ||
      die "not root and sudo is missing; install as root: apt-get install --no-install-recommends ${missing[*]}"
    sudo=(sudo)
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
    die "apt-get update failed (is the Debian mirror reachable?)"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" || die "apt-get install failed for: ${missing[*]}"
  mapfile -t missing < <(muon_missing_packages "$@")
  ((${#missing[@]} == 0)) || die "still not installed after apt-get install: ${missing[*]}"
  ok "installed"
}

# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------
# muon_build_dir <dir> [extra cmake args...]: configures <dir> (always when extra args are given,
# otherwise only when it has not been configured) and builds it with every core.
muon_build_dir() {
  local dir=$1
  shift
  local cache="$dir/CMakeCache.txt"
  if [[ -f $cache ]] && ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$cache"; then
    die "$dir was configured with another generator than Ninja; remove it (rm -rf $dir) and re-run"
  fi
  if [[ ! -f $cache || $# -gt 0 ]]; then
    step "Configuring $(muon_rel "$dir")"
    cmake -S "$MUON_ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" ||
      die "cmake configure of $dir failed"
  fi
  step "Building $(muon_rel "$dir")"
  cmake --build "$dir" -j "$(nproc)" || die "build of $dir failed"
}

# muon_build [extra cmake args...]: the same for build/, where binaries land in build/bin/.
muon_build() { muon_build_dir "$MUON_BUILD_DIR" "$@"; }

# ---------------------------------------------------------------------------------------------
# Waiting, ports, processes
# ---------------------------------------------------------------------------------------------
# wait_until <deadline-seconds> <command...>: runs the command every 0.2 s until it succeeds
# (returns 0) or the deadline passes (returns 1). The command runs in this shell, so it may die.
wait_until() {
  local deadline=$1
  shift
  local end=$((SECONDS + deadline))
  while true; do
    "$@" && return 0
    ((SECONDS < end)) || return 1
    sleep 0.2
  done
}

# True when something accepts TCP connections on 127.0.0.1:<port>.
muon_port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# muon_free_port <first>: prints the first port from <first> upwards nobody listens on.
muon_free_port() {
  local p
  for ((p = $1; p < $1 + 500 && p < 65536; p++)); do
    muon_port_busy "$p" || {
      printf '%s\n' "$p"
      return 0
    }
  done
  die "no free TCP port found in $1..$(($1 + 499))"
}

# True when the process exists and is not a zombie (an orphan's exit status may wait a while for
# PID 1 to collect it, and kill -0 still succeeds on a zombie).
muon_pid_running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# Pid files hold the pid on line 1 and the executable's path on line 2, so a pid that was
# reused by an unrelated process is never taken for ours.
muon_write_pidfile() { printf '%s\n%s\n' "$2" "$3" >"$1"; }

# muon_pidfile_pid <pidfile>: prints the pid when the process recorded in the file is alive and
# still runs the recorded executable (a rebuilt binary shows as "<path> (deleted)" and still
# counts); fails otherwise.
muon_pidfile_pid() {
  local file=$1 pid exe actual
  [[ -r $file ]] || return 1
  { IFS= read -r pid && IFS= read -r exe; } <"$file" || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  muon_pid_running "$pid" || return 1
  actual=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ ${actual% (deleted)} == "$exe" ]] || return 1
  printf '%s\n' "$pid"
}

# True when the pid on line 1 is alive, whatever it runs: for a process this script has just
# started, which may not have exec'd its binary yet.
muon_pidfile_alive() {
  local pid
  [[ -r $1 ]] && IFS= read -r pid <"$1" && [[ $pid =~ ^[0-9]+$ ]] && muon_pid_running "$pid"
}

# True when the process of a pid file runs a binary that has since been replaced on disk.
muon_pidfile_stale_binary() {
  local pid
  pid=$(muon_pidfile_pid "$1") || return 1
  [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == *" (deleted)" ]]
}

# True when none of the pids is alive.
muon_pids_gone() {
  local p
  for p in "$@"; do
    if muon_pid_running "$p"; then return 1; fi
  done
  return 0
}

# muon_stop_pidfiles <grace-seconds> <pidfile...>: SIGTERM to every live, matching process, waits
# up to the grace for them to exit, SIGKILLs the rest, removes the pid files.
muon_stop_pidfiles() {
  local grace=$1
  shift
  local file pid pids=() names=()
  for file in "$@"; do
    if pid=$(muon_pidfile_pid "$file"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      names+=("$(basename "$file" .pid)")
    fi
  done
  if ((${#pids[@]})); then
    if ! wait_until "$grace" muon_pids_gone "${pids[@]}"; then
      for pid in "${pids[@]}"; do
        if muon_pid_running "$pid"; then
          warn "pid $pid did not exit ${grace}s after SIGTERM: sending SIGKILL"
          kill -KILL "$pid" 2>/dev/null || true
        fi
      done
      wait_until 10 muon_pids_gone "${pids[@]}" || warn "some processes are still exiting: ${pids[*]}"
    fi
    ok "stopped ${names[*]}"
  fi
  rm -f -- "$@"
}
