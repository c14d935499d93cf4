#!/bin/sh
# Creates the role the API, workers and reconciler connect as: no superuser, no BYPASSRLS,
# so PostgreSQL's row-level security (migration 0008) applies to every query they make.
# The schema's owner ($POSTGRES_USER) runs the migrations (the compose `migrate` service);
# this role gets data access only, on the tables that exist and on every table a later
# migration of the owner creates (ALTER DEFAULT PRIVILEGES).
#
# The postgres image runs this once, when it initialises an empty data volume
# (/docker-entrypoint-initdb.d/), with POSTGRES_USER and POSTGRES_DB set. To run it by hand
# on an existing server: POSTGRES_USER=... POSTGRES_DB=... FACTORY_DB_APP_USER=...
# FACTORY_DB_APP_PASSWORD=... sh deploy/postgres/init-app-role.sh (psql's PG* variables
# say where the server is).
set -eu

: "${POSTGRES_USER:?the schema owner}"
: "${POSTGRES_DB:?the database}"
APP_USER="${FACTORY_DB_APP_USER:-factory_app}"
: "${FACTORY_DB_APP_PASSWORD:?the application role's password}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v app_user="$APP_USER" -v app_password="$FACTORY_DB_APP_PASSWORD" \
     -v owner="$POSTGRES_USER" -v db="$POSTGRES_DB" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD %L',
              :'app_user', :'app_password')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') \gexec
ALTER ROLE :"app_user" NOSUPERUSER NOBYPASSRLS;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"app_user";
GRANT USAGE ON SCHEMA public TO :"app_user";
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"app_user";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"app_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
      GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app_user";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
      GRANT USAGE, SELECT ON SEQUENCES TO :"app_user";
SQL
