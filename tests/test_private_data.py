"""What a node keeps is its own: the data folder 0700, the catalog and outbox 0600 (listening
history, token hashes, queued writes), backups too; uploads cut short by a crash are cleaned."""

from __future__ import annotations

import os
import stat

from media import Catalog
from media.backup import backup_catalog
from media.outbox import Outbox
from streamer import create_app
from tests.conftest import settings_for, wait_for_scan


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_catalog_outbox_and_backups_are_private(tmp_path):
    data = tmp_path / "data"
    catalog = Catalog(data / "catalog.db")
    catalog.close()
    outbox = Outbox(data / "outbox.db")
    outbox.close()
    backup = backup_catalog(data / "catalog.db", tmp_path / "backups" / "catalog-1.db")
    assert backup["tracks"] == 0
    assert _mode(data) == 0o700
    assert _mode(data / "catalog.db") == 0o600 and _mode(data / "outbox.db") == 0o600
    assert _mode(tmp_path / "backups" / "catalog-1.db") == 0o600
    os.chmod(data / "catalog.db", 0o644)  # made by an older version: corrected when opened
    Catalog(data / "catalog.db").close()
    assert _mode(data / "catalog.db") == 0o600


async def test_partial_uploads_left_by_a_crash_are_removed_at_start(aiohttp_client, demo_library, tmp_path):
    import shutil

    library = tmp_path / "music"
    shutil.copytree(demo_library, library)
    (library / ".upload-0123456789abcdef.mp3").write_bytes(b"half an upload")
    app = create_app(settings_for(library, tmp_path / "data"))
    await aiohttp_client(app)
    await wait_for_scan(app)
    assert not list(library.glob(".upload-*"))
