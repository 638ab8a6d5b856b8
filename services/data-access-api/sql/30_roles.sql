-- The least-privilege login data-access-api connects as. Idempotent: it
-- converges an existing database to this state. Before running it, set the
-- reader's password in the session:
--   SET flip.reader_password = '<password>';
-- (psql: SET flip.reader_password = :'reader_password';)
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'omop_readonly_base') THEN
		CREATE ROLE omop_readonly_base NOLOGIN;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'data_analyst_reader') THEN
		CREATE ROLE data_analyst_reader LOGIN;
	END IF;
	EXECUTE format('ALTER ROLE data_analyst_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 5 PASSWORD %L',
		current_setting('flip.reader_password'));
	EXECUTE format('GRANT CONNECT ON DATABASE %I TO omop_readonly_base', current_database());
	EXECUTE format('REVOKE CREATE, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
	EXECUTE format('REVOKE CREATE, TEMPORARY ON DATABASE %I FROM data_analyst_reader, omop_readonly_base', current_database());
END
$$;

GRANT omop_readonly_base TO data_analyst_reader;
ALTER ROLE data_analyst_reader SET statement_timeout = '300s';
ALTER ROLE data_analyst_reader SET default_transaction_read_only = on;
ALTER ROLE data_analyst_reader SET search_path = omop;
ALTER ROLE data_analyst_reader SET idle_in_transaction_session_timeout = '60s';

REVOKE ALL ON SCHEMA public FROM PUBLIC;
REVOKE CREATE ON SCHEMA omop FROM PUBLIC;
GRANT USAGE ON SCHEMA omop TO omop_readonly_base;
REVOKE CREATE ON SCHEMA omop FROM omop_readonly_base, data_analyst_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA omop TO omop_readonly_base;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA omop FROM omop_readonly_base, data_analyst_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA omop GRANT SELECT ON TABLES TO omop_readonly_base;

-- Server-side file, program and large-object access stays with superusers.
REVOKE pg_read_all_data, pg_write_all_data, pg_read_server_files, pg_write_server_files, pg_execute_server_program
	FROM data_analyst_reader, omop_readonly_base;
REVOKE EXECUTE ON FUNCTION lo_import(text), lo_import(text, oid), lo_export(oid, text) FROM PUBLIC;
