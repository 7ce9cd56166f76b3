#!/bin/sh
# A stand-in service: prints its greeting and waits.
echo "hello from $(cat "$(dirname "$0")/../VERSION" 2>/dev/null || echo dev)"
exec sleep infinity
