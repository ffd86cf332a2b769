#!/bin/sh
# Development certificates for deploy/docker-compose.secure.yml, written to deploy/certs/:
#   server/  mounted into the temporal service: server.pem + server.key (host names temporal,
#            localhost and 127.0.0.1; Temporal's services also present it to one another),
#            server-ca.pem (the CA Temporal's own services trust) and client-ca.pem (the CA
#            client certificates must chain to).
#   client/  mounted into every client (the worker, the Web UI, the namespace job; the CLI on the
#            host can use it too): client.pem + client.key, and server-ca.pem to check the server.
# Two CAs, so that a client certificate opens the frontend only, never Temporal's internal
# services. Each run makes new CAs and certificates (valid for a year); the CA keys live in a
# temporary folder and are thrown away, so no one can issue more certificates later.
# For a development machine only: the two keys are readable by everyone, because the containers'
# users (uid 1000, the worker's 10001) differ from yours. Needs openssl (1.1.1+ or LibreSSL).
set -eu

CERTS="$(cd "$(dirname "$0")" && pwd)/certs"
DAYS=365
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$CERTS/server" "$CERTS/client"

# ECDSA P-256 keys: quick to make, and every client here (Go, Rust, OpenSSL) takes them.
new_key() {
  openssl ecparam -name prime256v1 -genkey -noout -out "$1"
}

serial() {
  echo "0x$(openssl rand -hex 16)"
}

# new_ca NAME SUBJECT: a self-signed CA, $WORK/NAME.pem and its key $WORK/NAME.key.
new_ca() {
  printf '%s\n' 'basicConstraints=critical,CA:TRUE,pathlen:0' \
    'keyUsage=critical,keyCertSign,cRLSign' 'subjectKeyIdentifier=hash' >"$WORK/ext"
  new_key "$WORK/$1.key"
  openssl req -new -key "$WORK/$1.key" -subj "$2" -out "$WORK/csr"
  openssl x509 -req -in "$WORK/csr" -signkey "$WORK/$1.key" -days "$DAYS" -sha256 \
    -set_serial "$(serial)" -extfile "$WORK/ext" -out "$WORK/$1.pem"
}

# issue KEY CERT SUBJECT CA EXTENSION...: a new key and a certificate signed by the CA new_ca made.
issue() {
  key=$1 cert=$2 subject=$3 ca=$4
  shift 4
  printf '%s\n' 'basicConstraints=critical,CA:FALSE' "$@" >"$WORK/ext"
  new_key "$key"
  openssl req -new -key "$key" -subj "$subject" -out "$WORK/csr"
  openssl x509 -req -in "$WORK/csr" -CA "$WORK/$ca.pem" -CAkey "$WORK/$ca.key" -days "$DAYS" \
    -sha256 -set_serial "$(serial)" -extfile "$WORK/ext" -out "$cert"
  chmod 644 "$key" "$cert"
}

new_ca server-ca "/O=corporate-sale development/CN=Temporal server CA"
new_ca client-ca "/O=corporate-sale development/CN=Temporal client CA"

# serverAuth for the frontend; clientAuth because the internode connections present it too.
issue "$CERTS/server/server.key" "$CERTS/server/server.pem" "/O=corporate-sale development/CN=temporal" \
  server-ca 'subjectAltName=DNS:temporal,DNS:localhost,IP:127.0.0.1' \
  'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth,clientAuth'
issue "$CERTS/client/client.key" "$CERTS/client/client.pem" "/O=corporate-sale development/CN=corporate-sale client" \
  client-ca 'keyUsage=critical,digitalSignature' 'extendedKeyUsage=clientAuth'

cp "$WORK/server-ca.pem" "$CERTS/server/server-ca.pem"
cp "$WORK/client-ca.pem" "$CERTS/server/client-ca.pem"
cp "$WORK/server-ca.pem" "$CERTS/client/server-ca.pem"
chmod 644 "$CERTS/server/server-ca.pem" "$CERTS/server/client-ca.pem" "$CERTS/client/server-ca.pem"

openssl verify -purpose sslserver -CAfile "$CERTS/server/server-ca.pem" "$CERTS/server/server.pem"
openssl verify -purpose sslclient -CAfile "$CERTS/server/client-ca.pem" "$CERTS/client/client.pem"
echo "certificates written to $CERTS (server/ for Temporal, client/ for its clients)"
