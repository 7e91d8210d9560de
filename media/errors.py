"""Domain errors of the media layer. They know nothing of HTTP; streamer/ maps them to statuses."""


class MediaError(Exception):
    """Base of every error the media layer raises on purpose."""


class NotFound(MediaError):
    """No such track, album or artist (or its file is gone from the library)."""


class UnreadableFile(MediaError):
    """A file in the library that is not usable audio; the message says why."""


class InvalidQuery(MediaError):
    """A catalog query with a value outside what the catalog accepts (the message names it)."""


class InvalidData(MediaError):
    """A write whose data the catalog cannot take (a field names what is wrong)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
