#!/bin/sh
# One-shot job (temporalio/admin-tools): the namespace and the search attributes the corporate
# sale workflows set (OpportunityStage, OpportunityOwner, OpportunityAmount, OpportunityId,
# SaleProcess, and TaskOwner on the task workflows). Safe to run again.
set -eu

ADDRESS="${TEMPORAL_ADDRESS:-temporal:7233}"
NAMESPACE="${DEFAULT_NAMESPACE:-default}"
HOST="${ADDRESS%:*}"
PORT="${ADDRESS##*:}"

echo "waiting for Temporal at $ADDRESS"
nc -z -w 10 "$HOST" "$PORT"
# Resolve the host to IPv4, as temporalio/samples-server's create-namespace.sh does.
IP="$(getent ahosts "$HOST" | awk '/STREAM/ { print $1; exit }')"
ADDRESS="$IP:$PORT"

attempt=0
until temporal operator cluster health --address "$ADDRESS"; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 30 ]; then
    echo "Temporal at $ADDRESS is not healthy after $attempt attempts" >&2
    exit 1
  fi
  sleep 2
done

if ! temporal operator namespace describe --namespace "$NAMESPACE" --address "$ADDRESS" >/dev/null 2>&1; then
  echo "creating namespace $NAMESPACE"
  temporal operator namespace create --namespace "$NAMESPACE" --address "$ADDRESS"
fi

# A new namespace takes a few seconds to reach every service: retry until the attribute is listed.
search_attribute() {
  name=$1
  type=$2
  attempt=0
  until temporal operator search-attribute list --namespace "$NAMESPACE" --address "$ADDRESS" \
    | awk -v name="$name" '$1 == name { found = 1 } END { exit !found }'; do
    attempt=$((attempt + 1))
    if [ "$attempt" -ge 30 ]; then
      echo "cannot create the search attribute $name" >&2
      exit 1
    fi
    echo "creating search attribute $name ($type)"
    temporal operator search-attribute create --namespace "$NAMESPACE" --address "$ADDRESS" \
      --name "$name" --type "$type" || sleep 2
  done
}

search_attribute OpportunityStage Keyword
search_attribute OpportunityOwner Keyword
search_attribute OpportunityAmount Double
search_attribute TaskOwner Keyword
search_attribute OpportunityId Keyword
search_attribute SaleProcess Keyword
echo "namespace $NAMESPACE and its search attributes are ready"
