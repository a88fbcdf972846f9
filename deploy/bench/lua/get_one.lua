-- GET /heroes/{id} with a uniformly random id among the seeded heroes.
request = get_one
