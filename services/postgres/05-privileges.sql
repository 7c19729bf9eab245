-- Least privilege: what the API's role may do, and nothing more. The tables belong to the loader's role
-- (the owner); the API connects as a login role that is a member of the group role `atelier_api`
-- (compose: 06-api-login.sh; the local stack and the tests: scripts/stack.py's api_login()).
--
-- Idempotent, and applied on the current search_path like the other files: by the Postgres image as an
-- init script, by the local stack and tests with the schema, and by the loader inside its switch
-- transaction right after the new tables replace the old ones (a replaced table has no grants), so the
-- API's privileges never lapse. Every grant on a table is first revoked in full, so applying this file
-- leaves exactly the privileges below, whatever was granted before.
--
-- The matrix (columns the API never needs stay out of reach; reviewer_email can be written, never read):
--   reviews                 SELECT every column but reviewer_email; INSERT the columns a new review sets;
--                           UPDATE (helpfulness, reported). No DELETE, no TRUNCATE, no DDL.
--   reviews_photos          SELECT; INSERT (review_id, url)
--   characteristic_reviews  SELECT; INSERT (characteristic_id, review_id, value)
--   characteristics         SELECT
--   product_summaries       SELECT; INSERT and UPDATE (ratings, recommended, not_recommended): a review's
--                           upsert of its product's counts
--   characteristic_summaries SELECT; UPDATE (rating_sum, rating_count)
--   helpful_votes           SELECT, INSERT, DELETE (expiry); UPDATE (voted_at): a vote's ON CONFLICT DO UPDATE
--   idempotency_keys        SELECT, INSERT, DELETE (expiry); UPDATE of the stored answer: an expired key's
--                           ON CONFLICT DO UPDATE
--   identity sequences      USAGE on those of the three tables the API inserts into

-- The group role. Creating it needs CREATEROLE once (compose's and the embedded database's roles have it);
-- afterwards the check below skips it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'atelier_api') THEN
        CREATE ROLE atelier_api NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- created concurrently by another database's init or load
END
$$;

-- PostgreSQL before 15 let PUBLIC create tables in `public`; 15 and later do not. And PUBLIC may create
-- temporary tables in every database by default: DDL all the same, and disk the API's role could fill.
-- Both are closed where this role may (it owns the schema, the database, or is a superuser), so the
-- API's role creates no table of any kind on any version. The database's owner keeps its own.
DO $$
BEGIN
    IF pg_has_role(current_user,
                   (SELECT nspowner FROM pg_namespace WHERE nspname = current_schema()), 'USAGE') THEN
        EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', current_schema());
    END IF;
    IF pg_has_role(current_user,
                   (SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE') THEN
        EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    END IF;
END
$$;

REVOKE ALL ON reviews, reviews_photos, characteristics, characteristic_reviews, product_summaries,
              characteristic_summaries, helpful_votes, idempotency_keys
    FROM PUBLIC, atelier_api;

GRANT SELECT (id, product_id, rating, date, summary, body, recommend, reported, reviewer_name, response,
              helpfulness)
    ON reviews TO atelier_api;
GRANT INSERT (product_id, rating, date, summary, body, recommend, reviewer_name, reviewer_email)
    ON reviews TO atelier_api;
GRANT UPDATE (helpfulness, reported) ON reviews TO atelier_api;

GRANT SELECT ON reviews_photos TO atelier_api;
GRANT INSERT (review_id, url) ON reviews_photos TO atelier_api;

GRANT SELECT ON characteristic_reviews TO atelier_api;
GRANT INSERT (characteristic_id, review_id, value) ON characteristic_reviews TO atelier_api;

GRANT SELECT ON characteristics TO atelier_api;

GRANT SELECT ON product_summaries TO atelier_api;
GRANT INSERT (product_id, ratings, recommended, not_recommended) ON product_summaries TO atelier_api;
GRANT UPDATE (ratings, recommended, not_recommended) ON product_summaries TO atelier_api;

GRANT SELECT ON characteristic_summaries TO atelier_api;
GRANT UPDATE (rating_sum, rating_count) ON characteristic_summaries TO atelier_api;

GRANT SELECT, INSERT, DELETE ON helpful_votes TO atelier_api;
GRANT UPDATE (voted_at) ON helpful_votes TO atelier_api;

GRANT SELECT, INSERT, DELETE ON idempotency_keys TO atelier_api;
GRANT UPDATE (request_hash, review_id, created_at) ON idempotency_keys TO atelier_api;

REVOKE ALL ON SEQUENCE reviews_id_seq, reviews_photos_id_seq, characteristics_id_seq,
                       characteristic_reviews_id_seq
    FROM PUBLIC, atelier_api;
GRANT USAGE ON SEQUENCE reviews_id_seq, reviews_photos_id_seq, characteristic_reviews_id_seq TO atelier_api;
