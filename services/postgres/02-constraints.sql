-- Primary and foreign keys, added after the tables are filled (see 01-tables.sql).

ALTER TABLE reviews                ADD CONSTRAINT reviews_pkey                PRIMARY KEY (id);
ALTER TABLE characteristics        ADD CONSTRAINT characteristics_pkey        PRIMARY KEY (id);
ALTER TABLE reviews_photos         ADD CONSTRAINT reviews_photos_pkey         PRIMARY KEY (id);
ALTER TABLE characteristic_reviews ADD CONSTRAINT characteristic_reviews_pkey PRIMARY KEY (id);
ALTER TABLE product_summaries        ADD CONSTRAINT product_summaries_pkey        PRIMARY KEY (product_id);
ALTER TABLE characteristic_summaries ADD CONSTRAINT characteristic_summaries_pkey PRIMARY KEY (characteristic_id);

ALTER TABLE reviews_photos
    ADD CONSTRAINT reviews_photos_review_fkey
    FOREIGN KEY (review_id) REFERENCES reviews (id);
ALTER TABLE characteristic_reviews
    ADD CONSTRAINT characteristic_reviews_review_fkey
    FOREIGN KEY (review_id) REFERENCES reviews (id);
ALTER TABLE characteristic_reviews
    ADD CONSTRAINT characteristic_reviews_characteristic_fkey
    FOREIGN KEY (characteristic_id) REFERENCES characteristics (id);
