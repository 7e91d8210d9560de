"""What every door shares: route edge, auth, app keys, RFC 9110 ranges and preconditions, errors,
metrics, params, status pages, the Role interface. May import config/ and media/ only."""
