"""Masters and regions: the roles, the master's feed, the region's follower, forwarding and outbox,
pulls, play batches, promotion, the localhost launcher. May import http/, delivery/, api/ and media/."""
