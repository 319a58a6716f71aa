#!/usr/bin/env bash
# Installs the Debian tools the test suite drives for real, when they are missing:
#   spamd/spamc (SpamAssassin; also ships the sample messages the spam tests use),
#   swaks (an SMTP client), postfix (only for its smtp-source and smtp-sink tools).
# The Postfix daemon is never started: this machine must not listen on port 25.
set -euo pipefail

need=()
command -v spamd >/dev/null 2>&1 || need+=(spamd)
command -v spamc >/dev/null 2>&1 || need+=(spamc)
[ -f /usr/share/doc/spamassassin/examples/sample-spam.txt ] || need+=(spamassassin)
command -v swaks >/dev/null 2>&1 || need+=(swaks)
{ command -v smtp-source >/dev/null 2>&1 || [ -x /usr/sbin/smtp-source ]; } || need+=(postfix)

if [ ${#need[@]} -eq 0 ]; then
  echo "test tools present: spamd, spamc, swaks, smtp-source"
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "missing Debian packages: ${need[*]}; run as root or install them: apt-get install ${need[*]}" >&2
    exit 1
  fi
fi

echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
# Postfix asks how it should be configured; it is only here for its test tools.
echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
echo "postfix postfix/mailname string mailwire.test" | $sudo debconf-set-selections
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# No init system here, but make sure no Postfix master was left running by a package script.
if pgrep -x master >/dev/null 2>&1; then $sudo postfix stop >/dev/null 2>&1 || true; fi
[ -f /usr/share/doc/spamassassin/examples/sample-spam.txt ] || { echo "spamassassin samples missing" >&2; exit 1; }
