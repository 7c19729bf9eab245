#!/bin/sh
# The ETL container's job, run on every `docker compose up`: load the export in $DATA_DIR into a
# database that serves no data yet, generating a sample there first when the folder holds no export and
# GENERATE_SAMPLE_PRODUCTS asks for one. A database that already serves data is left as it is (the
# loader's --if-empty): a load replaces the data served, and with it every review, vote and report the
# API has taken since. ETL_RELOAD=1 loads the export all the same, replacing them. Exits with the
# loader's code. The rejects report goes to /reports (a volume of its own): the export folder, which
# may be yours (EXPORT_DIR: then never written, not even a sample). The loader waits up to a minute for PostgreSQL: a container
# started beside it may not be listening yet.
set -eu
data=${DATA_DIR:-/data}
if [ "${ETL_RELOAD:-0}" != 1 ]; then
  set -- --if-empty "$@"
fi
if [ ! -f "$data/reviews.csv" ]; then
  if [ -n "${EXPORT_DIR:-}" ]; then
    # Your folder: never filled with generated data. A database that already serves data needs no
    # export (the loader says so and exits 0); an empty one makes the loader fail, naming the file.
    echo "etl: EXPORT_DIR=$EXPORT_DIR (mounted at $data) holds no reviews.csv; not generating a sample there" >&2
  elif [ "${GENERATE_SAMPLE_PRODUCTS:-0}" -gt 0 ]; then
    echo "etl: no export in $data; generating a sample of $GENERATE_SAMPLE_PRODUCTS products"
    atelier-generate --out "$data" --products "$GENERATE_SAMPLE_PRODUCTS" --no-progress
  fi
fi
exec atelier-load --data "$data" --rejects /reports/rejects.csv --no-progress --wait 60 "$@"
