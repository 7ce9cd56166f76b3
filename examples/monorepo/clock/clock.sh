#!/bin/sh
# The clock service: one endpoint, Now, answering the current UTC time (2026-01-02T03:04:05Z).
# muon-bus comes with the node (it puts its tools first in PATH): it answers the NATS service API
# and runs the endpoint's command once per request (tools/muon-bus/README.md).
#   muon-bus request svc.clock.Now ""     ->  2026-01-02T03:04:05Z
command -v muon-bus >/dev/null 2>&1 || {
  echo "clock: muon-bus is not in PATH (the node runtime provides it)" >&2
  exit 127
}
exec muon-bus serve clock --description "tells the time" --endpoint Now='date -u +%FT%TZ'
