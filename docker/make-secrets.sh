#!/bin/sh
# Writes the compose file's secrets into docker/secrets/ (git-ignored), each a fresh random
# value; an existing file is kept, so running it again changes nothing. Then:
#   docker compose -f docker/compose.yaml up -d
# The directory is private to you (0700); the files in it are 0644 because compose (without
# swarm) bind-mounts them into the containers as they are, and the gateway (uid 10001),
# Prometheus (nobody) and Grafana (uid 472) must each read theirs.
set -eu
dir="${1:-$(dirname "$0")/secrets}"
mkdir -p "$dir"
chmod 700 "$dir"
random() {
    head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'
}
make() {  # make NAME PREFIX
    if [ ! -s "$dir/$1" ]; then
        (umask 022 && printf '%s%s' "$2" "$(random)" > "$dir/$1")
        echo "wrote $dir/$1"
    fi
}
make conduit_master_key condt_master_   # the admin API's key (Authorization: Bearer ...)
make conduit_secret_key ""              # encrypts provider credentials in MongoDB: keep it
make conduit_metrics_token ""           # Prometheus presents it to /metrics
make grafana_admin_password ""
echo "admin master key: $dir/conduit_master_key"
