# shellcheck shell=bash
# shared by the fake commands: state lives under $RB_FAKE_STATE
S="${RB_FAKE_STATE:?RB_FAKE_STATE not set}"
mkdir -p "$S/pkgs" "$S/held" "$S/units" "$S/sysctl"
log() { printf '%s\n' "$*" >> "$S/calls.log"; }
# the fake server's name for a repository or key URL's directory: $S/repos/<id>/
repo_id() { local u=${1%/}; printf '%s' "${u//[^A-Za-z0-9]/_}"; }
