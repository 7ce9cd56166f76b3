#!/bin/sh
# A stand-in service: prints the time every few seconds.
while true; do date -u +%FT%TZ; sleep 5; done
