#!/bin/sh
# Init script of the Postgres image (run once, on an empty data volume, after the *.sql files before it,
# 05-privileges.sql included): the API's login role. It logs in with API_DB_PASSWORD and holds only the
# group role atelier_api's privileges (05-privileges.sql); the tables stay owned by POSTGRES_USER, the
# loader's role. psql quotes the name and password itself (format %I and %L), whatever they contain.
# No `set -eu`: the image sources a script that is not executable, and must not inherit those options.
if [ -z "${API_DB_PASSWORD:-}" ]; then
  echo "06-api-login.sh: API_DB_PASSWORD is required (the API's database password; see .env.example)" >&2
  exit 1
fi
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER}" --dbname "${POSTGRES_DB}" \
  --set=login="${API_DB_USER:-atelier_api_login}" --set=password="${API_DB_PASSWORD}" <<'SQL'
SELECT 'CREATE ROLE atelier_api NOLOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'atelier_api')
\gexec
SELECT format('CREATE ROLE %I LOGIN', :'login') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'login')
\gexec
SELECT format('ALTER ROLE %I WITH LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', :'login', :'password')
\gexec
SELECT format('GRANT atelier_api TO %I', :'login')
\gexec
SQL
[ $? -eq 0 ] || exit 1
