#!/usr/bin/env bash
# Installs the Debian tools the test suite drives for real, when they are missing. Used by
# `npm run test:all` (the README's test command) and so by CI. Needs root (or sudo) only when
# something is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

section() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }
SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then SUDO="sudo"; fi

# ---------------------------------------------------------------------------------------
# System packages (Debian). Each is installed only when missing, so a warm machine skips apt.
#   spamd, spamc, spamassassin  the test global setup starts a real spamd on a free port; tests
#                               use spamassassin's sample-spam.txt / sample-nonspam.txt
#   swaks                       scripted SMTP client for end-to-end tests
#   postfix                     only for its smtp-source / smtp-sink load tools (no daemon)
#   sqlite3, openssl            inspecting the store, TLS checks and certificates
#   procps                      pgrep, used below
#   chromium                    the browser tests (test/browser.test.ts) drive Debian's chromium
#                               through playwright-core; a browser is never downloaded
# ---------------------------------------------------------------------------------------
APT_PACKAGES=(spamd spamc spamassassin swaks postfix sqlite3 openssl procps chromium)
SAMPLES_DIR=/usr/share/doc/spamassassin/examples

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

apt_install() {
  $SUDO apt-get install -y -q \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

if ((${#missing[@]})); then
  section "apt: installing ${missing[*]}"
  # postfix asks which mail setup to use; "No configuration" leaves it unconfigured and idle.
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  # Package scripts must not start daemons (spamd on :783, the postfix master): tests start
  # their own spamd. A policy-rc.d that answers 101 forbids invoke-rc.d starts; put one in
  # place only for the install, and only if the machine has none of its own.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    own_policy=1
    trap '$SUDO rm -f "$policy"' EXIT
  fi
  $SUDO apt-get update -q
  apt_install "${missing[@]}"
  if ((own_policy)); then
    $SUDO rm -f "$policy"
    trap - EXIT
  fi
else
  section "apt: all packages already installed"
fi

# Docker-style images may exclude /usr/share/doc from dpkg; the spam samples live there.
if [[ ! -f "$SAMPLES_DIR/sample-spam.txt" || ! -f "$SAMPLES_DIR/sample-nonspam.txt" ]]; then
  echo "spamassassin samples missing; reinstalling spamassassin with its examples"
  apt_install --reinstall -o "Dpkg::Options::=--path-include=$SAMPLES_DIR/*" spamassassin
fi
for f in sample-spam.txt sample-nonspam.txt; do
  [[ -f "$SAMPLES_DIR/$f" ]] || { echo "missing $SAMPLES_DIR/$f after install" >&2; exit 1; }
done

# The postfix package is here for its tools only: no master daemon may be left running.
if pgrep -x master >/dev/null; then
  echo "a postfix master daemon is running; stopping it"
  $SUDO postfix stop || true
fi

[[ -x /usr/bin/chromium ]] || { echo "missing /usr/bin/chromium after install (test/helpers/browser.ts runs it)" >&2; exit 1; }
echo "test tools: $(spamd --version 2>&1 | sed -n 1p); $(swaks --version 2>&1 | sed -n 1p); $(/usr/bin/chromium --version 2>/dev/null | sed -n 1p)"
