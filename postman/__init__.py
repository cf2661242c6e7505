"""The Postman collection and environment (committed JSON) and their generator, `python -m postman.generate`."""
