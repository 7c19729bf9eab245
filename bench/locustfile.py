"""Realistic storefront traffic for locust: product pages read reviews and their summary, a few
shoppers write. Product ids follow a Zipf-like law, so a few products are hot and most are cold, as in
a real catalogue.

    locust -f bench/locustfile.py --host http://localhost:8080            # web UI on :8089
    locust -f bench/locustfile.py --host http://localhost:8080 --headless -u 50 -r 10 -t 1m --html report.html

LOCUST_PRODUCTS: how many product ids exist (1000 for the sample `make up` loads, 1000011 at full scale).
LOCUST_ZIPF_S: the skew (1.1 by default; higher is hotter).
"""

from __future__ import annotations

import bisect
import itertools
import os
import random
from array import array

from locust import FastHttpUser, between, task

PRODUCTS = int(os.environ.get("LOCUST_PRODUCTS") or "1000")  # set but empty: the default, as compose
ZIPF_S = float(os.environ.get("LOCUST_ZIPF_S") or "1.1")
# Cumulative weights of rank k ~ 1/k^s over every product (bench/chaos.py's Traffic draws the same way);
# ranks map to shuffled product ids so the hot products are spread over the id range rather than all
# being the lowest ids.
_CUMULATIVE = array("d", itertools.accumulate(1.0 / (k**ZIPF_S) for k in range(1, PRODUCTS + 1)))
_IDS = array("q", range(1, PRODUCTS + 1))
random.Random(7).shuffle(_IDS)


def hot_product() -> int:
    rank = bisect.bisect_left(_CUMULATIVE, random.random() * _CUMULATIVE[-1])
    return _IDS[min(rank, PRODUCTS - 1)]


class Shopper(FastHttpUser):
    wait_time = between(0.5, 2)

    @task(70)
    def read_reviews(self) -> None:
        sort = random.choice(("relevant", "relevant", "newest", "helpful"))
        count = random.choice((5, 5, 5, 20, 100))
        self.client.get(f"/reviews?product_id={hot_product()}&sort={sort}&count={count}", name="/reviews")

    @task(25)
    def read_summary(self) -> None:
        self.client.get(f"/reviews/meta?product_id={hot_product()}", name="/reviews/meta")

    @task(3)
    def vote_helpful(self) -> None:
        with self.client.get(
            f"/reviews?product_id={hot_product()}&count=5", name="/reviews", catch_response=True
        ) as listing:
            results = listing.json().get("results", []) if listing.status_code == 200 else []
        if results:
            review_id = random.choice(results)["review_id"]
            self.client.put(f"/reviews/{review_id}/helpful", name="/reviews/{id}/helpful")

    @task(2)
    def write_review(self) -> None:
        product_id = hot_product()
        meta = self.client.get(f"/reviews/meta?product_id={product_id}", name="/reviews/meta").json()
        characteristics = {
            str(c["id"]): random.randint(1, 5) for c in meta.get("characteristics", {}).values()
        }
        self.client.post(
            "/reviews",
            name="/reviews [POST]",
            json={
                "product_id": product_id,
                "rating": random.randint(1, 5),
                "summary": "Load test review",
                "body": "Written by the load test to exercise the write path under realistic traffic. " * 2,
                "recommend": random.random() < 0.75,
                "name": "locust",
                "email": "locust@example.com",
                "photos": [],
                "characteristics": characteristics,
            },
        )
