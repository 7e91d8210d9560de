"""Bytes to players: originals with exact Range semantics, HLS playlists and segment runs,
progressive transcodes. May import http/, config/ and media/; never api/, cluster/ or web/."""
