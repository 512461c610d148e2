#!/usr/bin/env bash
# The webhook's TLS without cert-manager: a CA and a serving certificate made with openssl, the
# Secret sluice-webhook-tls, and the CA as the webhook configuration's caBundle.
#
#   deploy/webhook/gen-webhook-tls.sh [--out DIR] [--apply] [--days N]
#
#   --out DIR   where to write ca.crt, ca.key, tls.crt, tls.key (default: a new temporary folder)
#   --apply     also create or replace the Secret and set the caBundle, with kubectl (after
#               `kubectl apply -k deploy`, so the namespace and the webhook configuration exist)
#   --days N    validity of the serving certificate (default 365); the CA gets 10 years
#
# Run it again before the certificate expires (or after losing the CA key): it makes a new CA,
# so it replaces the Secret and the caBundle together; sluice webhook re-reads the Secret's files.
# Keep ca.key somewhere safe or delete it: it can sign certificates the API server will trust
# for this webhook.
set -euo pipefail

NAMESPACE=sluice-system
SERVICE=sluice-webhook
SECRET=sluice-webhook-tls
WEBHOOK_CONFIG=sluice-sidecar-injector

out=""
apply=false
days=365
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --apply) apply=true; shift ;;
    --days) days="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gen-webhook-tls.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
command -v openssl >/dev/null || { echo "gen-webhook-tls.sh: openssl is needed" >&2; exit 1; }
[ -n "$out" ] || out="$(mktemp -d)"
mkdir -p "$out"
umask 077

dns1="$SERVICE.$NAMESPACE.svc"
dns2="$SERVICE.$NAMESPACE.svc.cluster.local"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 3650 \
  -subj "/CN=sluice-webhook-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
  -subj "/CN=$dns1" -keyout "$out/tls.key" -out "$out/tls.csr" 2>/dev/null
cat > "$out/tls.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:$dns1,DNS:$dns2
EXT
openssl x509 -req -in "$out/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
  -sha256 -days "$days" -extfile "$out/tls.ext" -out "$out/tls.crt" 2>/dev/null
rm -f "$out/tls.csr" "$out/tls.ext" "$out/ca.srl"
openssl verify -CAfile "$out/ca.crt" "$out/tls.crt" >/dev/null

echo "wrote $out/ca.crt $out/tls.crt $out/tls.key (for $dns1, $days days)"
ca_bundle="$(base64 < "$out/ca.crt" | tr -d '\n')"
secret_cmd=(kubectl -n "$NAMESPACE" create secret tls "$SECRET" --cert="$out/tls.crt" --key="$out/tls.key" --dry-run=client -o yaml)
patch="[{\"op\":\"add\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$ca_bundle\"}]"
if [ "$apply" = true ]; then
  "${secret_cmd[@]}" | kubectl apply -f -
  kubectl patch mutatingwebhookconfiguration "$WEBHOOK_CONFIG" --type=json -p "$patch"
else
  echo "to install them:"
  echo "  ${secret_cmd[*]} | kubectl apply -f -"
  echo "  kubectl patch mutatingwebhookconfiguration $WEBHOOK_CONFIG --type=json -p '$patch'"
fi
