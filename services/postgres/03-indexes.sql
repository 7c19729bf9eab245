-- Secondary indexes: one for each access path of the API.

-- GET /reviews and /reviews/meta: a product's reviews, already in `newest` order; also answers
-- "is this a known product" for POST /reviews.
CREATE INDEX reviews_product_date_idx ON reviews (product_id, date DESC, id DESC);

-- GET /reviews: the photos of one page of reviews.
CREATE INDEX reviews_photos_review_idx ON reviews_photos (review_id);

-- POST /reviews: a product's characteristics.
CREATE INDEX characteristics_product_idx ON characteristics (product_id);

-- PUT /reviews/{id}/report: the characteristic ratings of the reported review, taken out of the summaries.
CREATE INDEX characteristic_reviews_review_idx ON characteristic_reviews (review_id);

-- GET /reviews/meta: a product's characteristic summaries.
CREATE INDEX characteristic_summaries_product_idx ON characteristic_summaries (product_id);
