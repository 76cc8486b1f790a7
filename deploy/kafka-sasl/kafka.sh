#!/usr/bin/env bash
# docker-compose.yml's Kafka: server.properties from server.properties.template, the SCRAM users (admin and
# one per service, passwords from the Docker secrets kafka_<user>_password) written when the storage is
# formatted, then the broker. Also writes /tmp/admin.properties for the health check and kafka-acls.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
secret() { cat "/run/secrets/kafka_$1_password"; }
admin="$(secret admin)"
conf=/tmp/server.properties
sed -e "s#@LISTEN@##g" -e "s#@HOST@#${KAFKA_ADVERTISED_HOST:-kafka}#g" -e "s#@PORT@#9092#g" \
    -e "s#@CONTROLLER_PORT@#9093#g" -e "s#@LOG_DIR@#/var/lib/kafka/data#g" -e "s#@ADMIN_PASSWORD@#${admin}#g" \
    "$here/server.properties.template" > "$conf"
cat > /tmp/admin.properties <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${admin}";
PROPS
if [ ! -f /var/lib/kafka/data/meta.properties ]; then
  scram=(--add-scram "SCRAM-SHA-512=[name=admin,password=${admin}]")
  for user in ingest reconcile publish; do
    scram+=(--add-scram "SCRAM-SHA-512=[name=${user},password=$(secret "$user")]")
  done
  /opt/kafka/bin/kafka-storage.sh format -t "$(/opt/kafka/bin/kafka-storage.sh random-uuid)" -c "$conf" "${scram[@]}"
fi
exec /opt/kafka/bin/kafka-server-start.sh "$conf"
