#!/bin/sh
# The hello service: one endpoint, Hello, answering "hello from <VERSION>" (the VERSION file next
# to this script; the build copies it into dist/ beside dist/hello). muon-bus comes with the node
# (it puts its tools first in PATH): it answers the NATS service API and runs the endpoint's
# command once per request (tools/muon-bus/README.md).
#   muon-bus request svc.hello.Hello ""   ->  hello from 1
here=$(dirname "$0")
HELLO_VERSION=$(cat "$here/VERSION" 2>/dev/null || echo dev)
export HELLO_VERSION
command -v muon-bus >/dev/null 2>&1 || {
  echo "hello: muon-bus is not in PATH (the node runtime provides it)" >&2
  exit 127
}
exec muon-bus serve hello --description "says hello" \
  --endpoint Hello='echo "hello from $HELLO_VERSION"'
