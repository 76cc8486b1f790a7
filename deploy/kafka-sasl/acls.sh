#!/usr/bin/env bash
# docker-compose.yml's one-shot kafka-acls step: the ACLs of acls.txt (each name under TOPIC_PREFIX), created
# as the admin over SASL. Adding an ACL that exists changes nothing, so it runs at every `up`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cat > /tmp/admin.properties <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(cat /run/secrets/kafka_admin_password)";
PROPS
while read -r principal kind name pattern operation; do
  case "$principal" in ''|'#'*) continue ;; esac
  name="${TOPIC_PREFIX:-}${name//\"/}"
  # Every topic, with no prefix to narrow it: the wildcard (a prefixed pattern cannot be empty).
  if [ -z "$name" ]; then name='*'; pattern=literal; fi
  /opt/kafka/bin/kafka-acls.sh --bootstrap-server "${KAFKA_BOOTSTRAP_SERVERS:-kafka:9092}" \
      --command-config /tmp/admin.properties --add --allow-principal "User:${principal}" \
      --operation "$operation" "--${kind}" "$name" --resource-pattern-type "$pattern" >/dev/null
done < "$here/acls.txt"
echo "kafka ACLs in place"
