"""The web player a browser opens at `/`: its shell (static/: HTML, CSS, ES modules, icon, manifest,
service worker), served by the node itself, nothing fetched from elsewhere and no build step.
May import http/; nothing imports it but the app."""
