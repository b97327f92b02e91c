#!/usr/bin/env bash
# make scale: a simulated fleet of all 66 hospitals onboarded by one apply, then a report
# (time to converge, Connect's memory and CPU, changes captured). Not part of make test.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
"$VENV/bin/python" -m connectors.scale "$@"
