"""The JSON API v1: the catalog, listener data, admin writes, the library's scan, and the request
bodies every write shares, sessions, waveforms, loudness. May import http/, delivery/, media/; never cluster/."""
