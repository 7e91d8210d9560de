"""The tests of this folder do run on uvloop, and the others on asyncio's own loop."""

import asyncio

import uvloop


async def test_this_folder_runs_on_uvloop():
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
