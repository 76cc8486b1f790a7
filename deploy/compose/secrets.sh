#!/usr/bin/env bash
# Creates the Docker secrets docker-compose.yml reads, as random values, in secrets/ (or $1): run once
# before `docker compose up`. Existing files are kept (delete one to get a new value). Prints the status
# page's token and where Grafana's admin password is; never overwrites, never echoes the other secrets.
set -euo pipefail

dir="${1:-$(cd "$(dirname "$0")/../.." && pwd)/secrets}"
mkdir -p "$dir"
chmod 700 "$dir"

random() { head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32; }

write() {  # name value: the file is created only when missing
  local file="$dir/$1"
  if [[ ! -s "$file" ]]; then
    (umask 022; printf '%s' "$2" >"$file")  # readable by the containers' own users (the folder is 0700)
    echo "created $file"
  fi
}

write postgres_password "$(random)"
write database_url "postgresql://audience_bridge:$(cat "$dir/postgres_password")@postgres:5432/audience_bridge"
write platform_client_secret "$(random)"
write ecsim_sim_token "$(random)"
write grafana_admin_password "$(random)"
write status_page_credentials "token:operator:$(random)"
# Kafka's SCRAM users: the admin (ACLs) and one principal per service. They are written into the broker's
# storage when it is first formatted: a new value takes `docker compose down -v` (a new kafka-data volume).
write kafka_admin_password "$(random)"
write kafka_ingest_password "$(random)"
write kafka_reconcile_password "$(random)"
write kafka_publish_password "$(random)"
echo "status page: Authorization: Bearer $(cut -d: -f3 "$dir/status_page_credentials")"
echo "grafana admin password: $dir/grafana_admin_password"
