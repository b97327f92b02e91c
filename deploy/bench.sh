#!/usr/bin/env bash
# make bench: every benchmark, side by side on this machine, each printing its own table.
# Not part of make test: numbers are reported, not asserted.
source "$(dirname "$0")/lib.sh"
PY="$VENV/bin/python"
cd "$ROOT"

say "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB memory"
# Pipeline workers left running by make demo would take the benchmark's raw topics for hospital
# data and share the cores with what is measured; the end-to-end step starts the ones it needs.
bash deploy/down.sh normalizer stats sink ingest poller
say "1/5 normalizer: pure core vs Faust through Kafka vs naive baseline"
"$PY" -m streams.bench_normalizer "$@"
say "2/5 sink: batched upsert vs plain COPY vs row-by-row INSERT ... ON CONFLICT"
"$PY" -m sinks.bench
say "3/5 statistics: normalizer + statistics vs normalizer alone, in process"
"$PY" -m streams.stats.bench
say "4/5 statistics worker through Kafka, and its floor (Faust reading the same records, no work): records/s"
"$PY" -m streams.stats.bench_worker --all-topics --floor  # every standard topic, as the platform's worker reads
say "5/5 end to end, without then with the statistics worker (the demo data is reset before each)"
"$PY" -m sinks.bench_e2e --statistics-cost
