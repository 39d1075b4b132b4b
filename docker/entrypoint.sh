#!/bin/sh
# The gateway reads CONDUIT_* variables; compose and Kubernetes hand secrets over as files,
# which keeps them out of `docker inspect`, the compose file and the process table of the
# host. Each regular file named conduit_<name> in $SECRETS_DIR (default /run/secrets)
# becomes CONDUIT_<NAME> for the command this script runs, unless that variable is set
# already to a non-empty value (an explicit variable wins; an empty one counts as unset,
# as it does for the gateway). Trailing newlines are dropped, as $(cat) does.
set -eu
dir="${SECRETS_DIR:-/run/secrets}"
if [ -d "$dir" ]; then
    for file in "$dir"/conduit_*; do
        [ -f "$file" ] || continue
        name=$(basename "$file" | tr '[:lower:]' '[:upper:]')
        case "$name" in
            *[!A-Z0-9_]*) continue ;;  # not a variable name: never reaches eval below
        esac
        eval "present=\${$name:+set}"
        if [ -z "$present" ]; then
            value=$(cat "$file")
            export "$name=$value"
        fi
    done
fi
exec "$@"
