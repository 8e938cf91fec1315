#!/usr/bin/env bash
# Makes a CA and one certificate per node for the one-host TLS example (deploy/tls/*.toml),
# with the common names node identity needs (broker-N / controller-N), plus an admin client
# certificate and admin.properties for kcat -F / sluice --command-config. Run from the repo
# root: deploy/tls/make-certs.sh [DIR]   (default ./tls)
set -euo pipefail
dir=${1:-./tls}
mkdir -p "$dir" && cd "$dir"
umask 077
[ -f ca.pem ] || openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=sluice-example-ca \
  -keyout ca.key -out ca.pem 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' > ext.cnf
for n in controller-1 controller-2 controller-3 broker-1 broker-2 broker-3 admin; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$n" -keyout "$n.key" -out "$n.csr" 2>/dev/null
  openssl x509 -req -in "$n.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
    -extfile ext.cnf -out "$n.crt" 2>/dev/null
  cat "$n.crt" "$n.key" > "$n.pem"
  rm -f "$n.csr" "$n.crt" "$n.key"
done
cat > admin.properties <<PROPS
bootstrap.servers=127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094
security.protocol=SSL
ssl.ca.location=$PWD/ca.pem
ssl.certificate.location=$PWD/admin.pem
ssl.key.location=$PWD/admin.pem
PROPS
echo "certificates and admin.properties in $PWD"
