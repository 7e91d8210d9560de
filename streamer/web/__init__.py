"""The web page a browser opens at `/`, served by the node itself (static/), with nothing fetched
from elsewhere. May import http/ and the api/ it calls; nothing imports it but the app."""
