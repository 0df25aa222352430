#!/usr/bin/env bash
# Installs callback-ari as a system service on a Debian 12 / Ubuntu 24.04 host that runs Asterisk:
#
#   sudo bash dialplan/install.sh
#
# What it does (every step is idempotent; run it again to upgrade):
#   - apt: python3-venv, procps (/bin/kill for `systemctl reload`) and redis-server when missing
#     (--no-redis skips Redis when yours runs elsewhere)
#   - the system user and group `callback-ari`
#   - a virtualenv /opt/callback-ari with the exact, hash-checked versions of .ci/requirements.lock,
#     then this checkout's callback-ari (the `callback-ari` command is linked to /usr/local/bin)
#   - the dialplan kit in /usr/share/callback-ari/ (the files of dialplan/, from the package)
#   - /etc/asterisk/callback_ari.conf (the example config, mode 0640 root:callback-ari) and
#     /etc/systemd/system/callback-ari.service
#   - `systemctl enable callback-ari`; starts (or restarts) it once `config check` passes
#
# Files under /etc are the administrator's: like dpkg's conffiles, a file you edited is never
# replaced; the new version is written next to it as FILE.dist and the install says so.
# Checksums of what was installed last are kept in /var/lib/callback-ari/conffiles.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/callback-ari
CONF=/etc/asterisk/callback_ari.conf
ENV_FILE=/etc/asterisk/callback_ari.env
UNIT=/etc/systemd/system/callback-ari.service
SHARE=/usr/share/callback-ari
DOC=/usr/share/doc/callback-ari
STATE=/var/lib/callback-ari
LOCK="$SRC/.ci/requirements.lock"
USER_NAME=callback-ari

with_redis=1
for arg in "$@"; do
  case "$arg" in
    --no-redis) with_redis=0 ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
    *) echo "install: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done

say() { echo "install: $*"; }
die() { echo "install: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root: sudo bash $0"
command -v apt-get >/dev/null || die "this installer is for Debian/Ubuntu (apt-get not found)"
[ -f "$LOCK" ] || die "$LOCK not found: run this from a complete checkout of callback-ari"
umask 022

# --- Python ----------------------------------------------------------------------------------
min_python=$(sed -n 's/^requires-python *= *">= *\([0-9][0-9.]*\)".*/\1/p' "$SRC/pyproject.toml")
min_python=${min_python:-3.11}
command -v python3 >/dev/null || die "python3 not found: apt-get install python3"
if ! python3 -c "import sys; sys.exit(sys.version_info[:2] < tuple(map(int, '$min_python'.split('.'))))"
then
  die "callback-ari needs Python >= $min_python; $(command -v python3) is $(python3 -V 2>&1)"
fi

# --- Debian packages -------------------------------------------------------------------------
need=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
[ -x /bin/kill ] || need+=(procps)
if [ "$with_redis" = 1 ] && ! command -v redis-server >/dev/null; then need+=(redis-server); fi
if [ "${#need[@]}" -gt 0 ]; then
  say "apt-get install ${need[*]}"
  apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" \
      >/dev/null
  }
  apt_install || { apt-get update -qq && apt_install; } || die "apt-get install ${need[*]} failed"
fi

# --- user ------------------------------------------------------------------------------------
if ! getent group "$USER_NAME" >/dev/null; then
  groupadd --system "$USER_NAME"
  say "created group $USER_NAME"
fi
if ! getent passwd "$USER_NAME" >/dev/null; then
  useradd --system --gid "$USER_NAME" --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin --comment "callback-ari service" "$USER_NAME"
  say "created system user $USER_NAME"
fi

# --- virtualenv from the lock ----------------------------------------------------------------
[ -x "$PREFIX/bin/python" ] || python3 -m venv "$PREFIX"
# Build from a copy: an in-tree build would leave root-owned build/ and *.egg-info in the checkout.
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
mkdir "$build/src"
tar -C "$SRC" --exclude=./.git --exclude=./.venv --exclude=./build --exclude='*.egg-info' \
  --exclude=__pycache__ --exclude=.pytest_cache -cf - . | tar -C "$build/src" -xf -
# Reinstall only what changed since the last run (the lock, this checkout's files).
stamp=$( { sha256sum "$LOCK"; tar -C "$build/src" --sort=name --mtime=@0 --owner=0 --group=0 \
  --numeric-owner -cf - . | sha256sum; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$PREFIX/.installed-from" 2>/dev/null)" != "$stamp" ] \
   || ! "$PREFIX/bin/callback-ari" --version >/dev/null 2>&1; then
  "$PREFIX/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r "$LOCK"
  "$PREFIX/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    --no-build-isolation --force-reinstall "$build/src"
  echo "$stamp" >"$PREFIX/.installed-from"
fi
version=$("$PREFIX/bin/callback-ari" --version)
link=/usr/local/bin/callback-ari
if [ ! -e "$link" ] || [ "$(readlink "$link")" = "$PREFIX/bin/callback-ari" ]; then
  ln -sfn "$PREFIX/bin/callback-ari" "$link"
else
  say "$link exists and is not ours: left alone (use $PREFIX/bin/callback-ari)"
fi
say "$version in $PREFIX"

# --- kit and docs (package-owned: always replaced) -------------------------------------------
rm -rf "$SHARE.new"
"$PREFIX/bin/callback-ari" kit "$SHARE.new" >/dev/null
rm -rf "$SHARE" && mv "$SHARE.new" "$SHARE"
install -D -m 0644 "$SRC/README.md" "$DOC/README.md"
say "dialplan kit in $SHARE"

# --- conffiles (the administrator's: never overwritten once edited) ---------------------------
mkdir -p "$STATE"
touch "$STATE/conffiles"
recorded() { awk -v f="$1" '$2 == f {print $1}' "$STATE/conffiles"; }
record() {
  local sum
  sum=$(sha256sum "$2" | cut -d' ' -f1)
  { awk -v f="$1" '$2 != f' "$STATE/conffiles"; echo "$sum $1"; } >"$STATE/conffiles.new"
  mv "$STATE/conffiles.new" "$STATE/conffiles"
}
# install_conffile NEW DEST MODE OWNER:GROUP, dpkg's rules: the recorded checksum is that of the
# version shipped last time. Unedited files follow the shipped version; an edited file is kept,
# and only when the shipped version changed too is the new one written beside it as DEST.dist.
install_conffile() {
  local new=$1 dest=$2 mode=$3 owner=$4 shipped was
  shipped=$(sha256sum "$new" | cut -d' ' -f1)
  was=$(recorded "$dest")
  if [ -e "$dest" ]; then
    if cmp -s "$new" "$dest"; then
      record "$dest" "$new"; rm -f "$dest.dist"; return
    fi
    [ "$shipped" = "$was" ] && return  # edited by the admin, nothing new shipped: theirs
    if [ "$(sha256sum "$dest" | cut -d' ' -f1)" != "$was" ]; then
      install -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$new" "$dest.dist"
      record "$dest" "$new"
      say "kept your $dest; the new version is $dest.dist"
      return
    fi
  fi
  install -D -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$new" "$dest"
  record "$dest" "$new"
  say "installed $dest"
}
"$PREFIX/bin/callback-ari" config sample >"$build/callback_ari.conf"
mkdir -p /etc/asterisk
install_conffile "$build/callback_ari.conf" "$CONF" 0640 "root:$USER_NAME"
install_conffile "$SHARE/callback-ari.service" "$UNIT" 0644 root:root
if command -v runuser >/dev/null && ! runuser -u "$USER_NAME" -- test -r "$CONF"; then
  say "WARNING: $USER_NAME cannot read $CONF; fix: chown root:$USER_NAME $CONF && chmod 0640 $CONF"
fi

# --- systemd ---------------------------------------------------------------------------------
config_ok() {
  # As the unit will run it: its user, and the secrets of its EnvironmentFile (KEY=VALUE lines).
  local vars=()
  if [ -r "$ENV_FILE" ]; then
    mapfile -t vars < <(grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$ENV_FILE" || true)
  fi
  runuser -u "$USER_NAME" -- env "${vars[@]}" "$PREFIX/bin/callback-ari" -c "$CONF" \
    config check --quiet
}
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --quiet callback-ari.service
  if config_ok; then
    if systemctl is-active --quiet callback-ari.service; then
      systemctl restart callback-ari.service && say "restarted callback-ari"
    else
      systemctl start callback-ari.service && say "started callback-ari"
    fi
    systemctl --no-pager --lines=0 status callback-ari.service || true
  else
    say "enabled, not started: fix the problems above in $CONF (secrets may go in $ENV_FILE),"
    say "then: systemctl start callback-ari"
  fi
else
  command -v systemctl >/dev/null && systemctl enable --quiet callback-ari.service
  say "systemd is not running here: enabled for the next boot, not started"
fi
cat <<NEXT
install: done. Next steps (README "Wire it into your Asterisk"):
  - set the ARI/AMI secrets and your queues in $CONF, check with:
      callback-ari -c $CONF config check
  - merge the kit from $SHARE into /etc/asterisk (ari.conf, manager.conf, extensions, queues)
  - callback-ari -c $CONF check      (the doctor: ARI, AMI, dialplan, prompts, Redis)
  - systemctl restart callback-ari;  after editing the config: systemctl reload callback-ari
NEXT
