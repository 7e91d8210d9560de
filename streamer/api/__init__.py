"""The JSON API v1: the catalog, listener data, admin writes, the library's scan, and the request
bodies every write shares. May import http/, delivery/ (covers go out paced) and media/; never cluster/."""
