-- What the API remembers of requests, so that a repeated request is not applied twice. Not export data:
-- the loader builds and switches only the four tables of 01-tables.sql, then applies this file in
-- `public` (hence IF NOT EXISTS everywhere: applying it again changes nothing) and empties both tables in
-- the same transaction: their rows name reviews of the data a reload replaces (and the ids the API hands
-- out start again past the export's largest). Neither table references `reviews`: a load replaces that
-- table.
--
-- Retention: 24 hours for both (atelier_api.votes.VOTE_RETENTION, atelier_api.idempotency.KEY_RETENTION).
-- Every write that adds a row here also deletes up to two expired rows of the same table (oldest first,
-- skipping rows another transaction holds), so expired rows never pile up while traffic flows; an
-- expired row still present is treated as absent.

-- PUT /reviews/{id}/helpful through nginx: one row per counted vote, keyed by nginx's id of the request
-- (X-Balancer-Request-Id: the same for every replica nginx tries for one client request, and set by nginx
-- whatever the client sent). A vote whose (request_id, review_id) is already here is acknowledged again
-- and not counted again. A client's own retry is another request, with another id: it counts.
CREATE TABLE IF NOT EXISTS helpful_votes (
    request_id text        NOT NULL,
    review_id  bigint      NOT NULL,
    voted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, review_id)
);
CREATE INDEX IF NOT EXISTS helpful_votes_voted_at_idx ON helpful_votes (voted_at);

-- POST /reviews with an Idempotency-Key header: the key, a SHA-256 of the request's body (canonical
-- JSON) and the review it created. Written in the same transaction as the review, so a key is stored
-- only with a created review: a refused or failed request leaves no key behind.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key          text        PRIMARY KEY,
    request_hash bytea       NOT NULL,
    review_id    bigint      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at_idx ON idempotency_keys (created_at);
