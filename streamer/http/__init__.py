"""What every door shares: the route edge, auth, the app keys, RFC 9110 ranges and preconditions,
errors, metrics, query parameters, the node's status pages and the Role interface.
May import config/ and media/ only; nothing in http/ imports delivery/, api/, cluster/ or web/."""
