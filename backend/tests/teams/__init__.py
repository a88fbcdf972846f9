"""A second resource, the SQLModel tutorial's Team, built exactly like the heroes: models,
query functions, a router. It lives in the tests (the product's API stays the tutorial's) to
prove what adding a resource touches: these files, a table, and one line to include the router
(docs/architecture.md, "Adding a resource")."""
