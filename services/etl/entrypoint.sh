#!/bin/sh
# The ETL container's job: load the export in $DATA_DIR, generating a sample there first when the
# folder holds no export and GENERATE_SAMPLE_PRODUCTS asks for one. Exits with the loader's code. The
# loader waits up to a minute for PostgreSQL: a container started beside it may not be listening yet.
set -eu
data=${DATA_DIR:-/data}
if [ ! -f "$data/reviews.csv" ] && [ "${GENERATE_SAMPLE_PRODUCTS:-0}" -gt 0 ]; then
  echo "etl: no export in $data; generating a sample of $GENERATE_SAMPLE_PRODUCTS products"
  atelier-generate --out "$data" --products "$GENERATE_SAMPLE_PRODUCTS" --no-progress
fi
exec atelier-load --data "$data" --no-progress --wait 60 "$@"
