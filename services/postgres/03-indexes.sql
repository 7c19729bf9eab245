-- Secondary indexes: one for each access path of the API.

-- GET /reviews and /reviews/meta: a product's reviews, already in `newest` order; also answers
-- "is this a known product" for POST /reviews.
CREATE INDEX reviews_product_date_idx ON reviews (product_id, date DESC, id DESC);

-- GET /reviews: the photos of one page of reviews.
CREATE INDEX reviews_photos_review_idx ON reviews_photos (review_id);

-- GET /reviews/meta and POST /reviews: a product's characteristics.
CREATE INDEX characteristics_product_idx ON characteristics (product_id);

-- GET /reviews/meta: the ratings of each characteristic (value included so the average reads the index only).
CREATE INDEX characteristic_reviews_characteristic_idx ON characteristic_reviews (characteristic_id) INCLUDE (review_id, value);
